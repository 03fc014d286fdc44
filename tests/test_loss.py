"""ComputeLoss (spec §6) against the reference fixture; gains, assignment, smoothing, nc=1, focal loss, CIoU
against torchvision's and the loss's host-device syncs."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torchvision.ops import box_convert, complete_box_iou_loss, sigmoid_focal_loss

from yolo_transfer.data import load_hyp
from yolo_transfer.engine.loss import BCEWithFocus, ComputeLoss, ciou_loss, scale_loss_gains
from yolo_transfer.models import build_model, load_model

IMGSZ = 64  # grids 8, 4, 2 for the synthetic cases


def test_loss_matches_reference(official_weights, reference_dir):
    reference = json.loads((reference_dir / "yolov5n_loss.json").read_text())
    batch = np.load(reference_dir / "yolov5n_loss_batch.npz")
    model, _ = load_model(official_weights)
    model.float().train()
    for param in model.parameters():
        param.requires_grad_(True)
    hyp = scale_loss_gains(load_hyp("low"), nl=3, nc=80, imgsz=320)
    for key, value in reference["hyp_scaled"].items():
        assert hyp[key] == pytest.approx(value), key

    images = torch.from_numpy(batch["images_rgb_uint8"]).permute(0, 3, 1, 2).float() / 255
    loss, items = ComputeLoss(model, hyp)(model(images), torch.from_numpy(batch["targets"]))
    loss.backward()

    lbox, lobj, lcls = items.tolist()
    assert lbox == pytest.approx(reference["lbox"], rel=1e-3)
    assert lobj == pytest.approx(reference["lobj"], rel=1e-3)
    assert lcls == pytest.approx(reference["lcls"], rel=1e-3)
    assert loss.item() == pytest.approx(reference["loss_total_times_batch"], rel=1e-3)
    params = dict(model.named_parameters())
    for name, norm in reference["grad_norms"].items():
        assert params[name].grad.norm().item() == pytest.approx(norm, rel=1e-2), name


def test_scale_loss_gains():
    hyp = load_hyp("low")
    same = scale_loss_gains(hyp, nl=3, nc=80, imgsz=640)
    assert (same["box"], same["obj"], same["cls"]) == (hyp["box"], hyp["obj"], hyp["cls"])
    assert same["label_smoothing"] == 0.0
    voc = scale_loss_gains(hyp, nl=3, nc=20, imgsz=320)
    assert voc["cls"] == pytest.approx(hyp["cls"] * 0.25)
    assert voc["obj"] == pytest.approx(hyp["obj"] * 0.25)
    four_levels = scale_loss_gains(hyp, nl=4, nc=80, imgsz=640)
    assert four_levels["box"] == pytest.approx(hyp["box"] * 0.75)
    assert hyp["box"] == load_hyp("low")["box"]  # the input is not modified


def raw_predictions(model, batch_size: int = 2, fill: float | None = None) -> list[torch.Tensor]:
    """Leaf tensors shaped like the train-mode outputs at IMGSZ (random, or constant ``fill``)."""
    generator = torch.Generator().manual_seed(0)
    detect = model.detect
    shapes = [(batch_size, detect.na, IMGSZ // s, IMGSZ // s, detect.nc + 5) for s in (8, 16, 32)]
    if fill is None:
        return [torch.randn(shape, generator=generator).requires_grad_() for shape in shapes]
    return [torch.full(shape, fill).requires_grad_() for shape in shapes]


@pytest.fixture(scope="module")
def three_class_model():
    return build_model("yolov5n", nc=3)


TARGETS = torch.tensor([[0, 0, 0.30, 0.30, 0.20, 0.25], [1, 1, 0.70, 0.55, 0.50, 0.40]])


def test_single_class_skips_class_loss():
    model = build_model("yolov5n", nc=1)
    preds = raw_predictions(model)
    targets = TARGETS.clone()
    targets[:, 1] = 0
    loss, items = ComputeLoss(model, scale_loss_gains(load_hyp("low"), 3, 1, IMGSZ))(preds, targets)
    loss.backward()
    assert items[2] == 0 and items[0] > 0 and items[1] > 0
    for pred in preds:
        assert (pred.grad[..., 5:] == 0).all()
    assert any(pred.grad[..., :5].abs().sum() > 0 for pred in preds)


def test_label_smoothing_sets_class_targets(three_class_model):
    """With every class logit at 2, BCE = softplus(2) - 2 * mean(target) on each level that has positives."""
    model = three_class_model
    preds = raw_predictions(model, fill=2.0)
    for eps in (0.0, 0.1):
        hyp = {**load_hyp("low"), "label_smoothing": eps}
        compute_loss = ComputeLoss(model, hyp)
        _, items = compute_loss(preds, TARGETS)
        levels_with_positives = sum(len(level[0]) > 0 for level in compute_loss.build_targets(preds, TARGETS))
        mean_target = ((1 - eps / 2) + 2 * (eps / 2)) / 3
        expected = hyp["cls"] * levels_with_positives * (F.softplus(torch.tensor(2.0)) - 2 * mean_target)
        assert items[2].item() == pytest.approx(expected.item(), rel=1e-5)


def test_targets_use_up_to_three_cells(three_class_model):
    model = three_class_model
    preds = raw_predictions(model)
    compute_loss = ComputeLoss(model, load_hyp("low"))
    # centre (2.4, 2.6) on the 8x8 grid: own cell (2, 2), left neighbour (1, 2) and lower neighbour (2, 3)
    target = torch.tensor([[0, 2, 0.3, 0.325, 0.25, 0.25]])
    image, anchor, cell_y, cell_x, box, cls = compute_loss.build_targets(preds, target)[0]
    assert len(image) % 3 == 0 and len(image) > 0
    for a in anchor.unique():
        cells = {(int(x), int(y)) for x, y, k in zip(cell_x, cell_y, anchor, strict=True) if k == a}
        assert cells == {(2, 2), (1, 2), (2, 3)}
    assert (box[:, :2] > -0.5).all() and (box[:, :2] < 1.5).all()
    assert torch.allclose(box[:, 2:], torch.tensor([2.0, 2.0]).expand_as(box[:, 2:]))
    assert (cls == 2).all() and (image == 0).all()
    # 2 x 2 grid cells, far from the P3 anchors (1.25 x 1.625 ... 4.1 x 2.9 cells): ratio < 4 for all three
    assert set(anchor.tolist()) == {0, 1, 2}


def test_focal_loss_matches_torchvision_without_pos_weight():
    logits = torch.randn(64, generator=torch.Generator().manual_seed(1))
    target = (torch.arange(64) % 3 == 0).float()
    focal = BCEWithFocus(pos_weight=1.0, gamma=1.5)(logits, target)
    expected = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=1.5, reduction="mean")
    assert focal.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = BCEWithFocus(pos_weight=1.0)(logits, target)
    assert plain.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)


def test_ciou_loss_matches_torchvision():
    """Overlapping, nested, touching and disjoint boxes: values and gradients as torchvision's CIoU loss."""
    generator = torch.Generator().manual_seed(2)
    target = torch.rand(256, 4, generator=generator, dtype=torch.float64) * torch.tensor([4, 4, 2, 2]) + 0.05
    pred = (target + torch.randn(256, 4, generator=generator, dtype=torch.float64) * 0.8).abs() + 0.05
    pred[:8] = target[:8]  # identical
    pred[8:16, 2:] = target[8:16, 2:] / 3  # nested
    pred[16:24, 0] = target[16:24, 0] + (target[16:24, 2] + pred[16:24, 2]) / 2  # touching sides
    pred[24:32, :2] = target[24:32, :2] + 10  # far apart
    ours_pred, theirs_pred = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    ours = ciou_loss(ours_pred, target)
    corners = [box_convert(boxes, "cxcywh", "xyxy") for boxes in (theirs_pred, target)]
    theirs = complete_box_iou_loss(*corners, eps=1e-7)
    ours.sum().backward()
    theirs.sum().backward()
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert torch.allclose(ours_pred.grad, theirs_pred.grad, rtol=1e-9, atol=1e-12)
    assert (ours[24:32] > 1).all() and (ours[:8] < 1e-5).all()
    half = ciou_loss(pred.half(), target.half())  # upcast first, as torchvision's box losses
    assert half.dtype == torch.float32


def test_loss_and_its_backward_call_nonzero_once(three_class_model):
    """No boolean masks in the loss or its backward: one nonzero (the assignment's kept rows) in all, where
    each is a host-device sync on a GPU (torchvision's CIoU alone took ten per level)."""
    model = three_class_model
    preds = raw_predictions(model, batch_size=4)
    targets = torch.cat([TARGETS, TARGETS + torch.tensor([2, 0, 0.05, 0.1, 0, 0])])
    compute_loss = ComputeLoss(model, scale_loss_gains(load_hyp("low"), 3, 3, IMGSZ))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loss, _ = compute_loss(preds, targets)
        loss.backward()
    ops = [event.name for event in prof.events()]
    assert ops.count("aten::nonzero") == 1
    assert all(len(level[0]) for level in compute_loss.build_targets(preds, targets))  # every level trains


def test_crowded_cells_give_the_same_loss_every_time(three_class_model):
    """Targets that share grid cells (dense objects: bccd's cells) write the objectness target of the last
    one, as a serial write and torch's deterministic mode (yolov5 train.py's setting) do: repeated losses and
    their gradients are bit-identical, where the plain indexed write raced between CPU threads."""
    generator = torch.Generator().manual_seed(1)
    centres = 0.5 + 0.05 * torch.randn(8 * 400, 2, generator=generator)  # 400 boxes a crowded image
    sizes = 0.04 + 0.02 * torch.rand(8 * 400, 2, generator=generator)
    images = torch.arange(8).repeat_interleave(400).unsqueeze(1).float()
    classes = torch.randint(0, 3, (8 * 400, 1), generator=generator).float()
    targets = torch.cat((images, classes, centres, sizes), 1)
    compute_loss = ComputeLoss(three_class_model, load_hyp("low"))

    def loss_and_grads() -> list[torch.Tensor]:
        preds = raw_predictions(three_class_model, batch_size=8)
        loss, _ = compute_loss(preds, targets)
        loss.backward()
        return [loss.detach(), *(pred.grad for pred in preds)]

    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        deterministic = loss_and_grads()
    finally:
        torch.use_deterministic_algorithms(before)
    for _ in range(5):
        assert all(torch.equal(a, b) for a, b in zip(loss_and_grads(), deterministic, strict=True))
