"""``evaluate`` and ``yolo-transfer val``: end to end against the reference numbers, outputs, errors."""

import json

import pytest
import torch
from conftest import shared_path

from yolo_transfer.cli import main
from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.evaluate import evaluate, labels_in_original
from yolo_transfer.engine.loss import ComputeLoss
from yolo_transfer.models import build_model, load_model

# reference val.py on coco8 val with the official yolov5n (rect batches of 8, pad 0.5, imgsz 640)
REFERENCE = {"precision": 0.781, "recall": 0.652, "map50": 0.709, "map50_95": 0.484}


def test_val_command_matches_reference_on_coco8(official_weights, tmp_path, capsys):
    data = shared_path("data", "coco8", "coco8.yaml")
    out = tmp_path / "val"
    code = main(["val", "--weights", str(official_weights), "--data", str(data), "--imgsz", "640",
                 "--batch", "8", "--workers", "0", "--out", str(out)])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key, value in REFERENCE.items():
        assert metrics[key] == pytest.approx(value, abs=0.01), key
    assert set(metrics["coco"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert metrics["coco"]["AP50"] == pytest.approx(metrics["map50"], abs=0.05)
    per_class = {row["name"]: row for row in metrics["per_class"]}
    assert sum(row["instances"] for row in per_class.values()) == metrics["instances"] == 17
    assert per_class["person"]["images"] >= 1 and 0 <= per_class["person"]["map50_95"] <= 1
    assert (out / "pr_curve.png").stat().st_size > 0 and (out / "confusion_matrix.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "person" in printed and "mAP50-95" in printed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (checked on GPU machines)")
def test_evaluate_on_the_gpu_keeps_the_model_there_and_matches_reference(official_weights):
    # without a device the model stays where it is, beside the loss's anchors (the cost model's validation
    # moved its GPU copy to the CPU and failed there)
    data = load_dataset(shared_path("data", "coco8", "coco8.yaml"))
    model, _ = load_model(official_weights)
    model.cuda()
    loader = build_dataloader(data.val, 640, 8, augment=False, hyp=load_hyp("none"), rect=True, pad=0.5)
    metrics = evaluate(model, loader, data.names, compute_loss=ComputeLoss(model, load_hyp("low")))
    assert all(parameter.is_cuda for parameter in model.parameters())
    for key, value in REFERENCE.items():
        assert metrics[key] == pytest.approx(value, abs=0.01), key
    assert all(value > 0 for value in metrics["loss"])


def test_val_rejects_bad_image_size(capsys, tmp_path):
    for name in ("w.pt", "data.yaml"):
        (tmp_path / name).write_bytes(b"")  # found, never read: the size is refused first
    args = ["--weights", str(tmp_path / "w.pt"), "--data", str(tmp_path / "data.yaml"), "--imgsz", "100"]
    code = main(["val", *args, "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--imgsz 100" in capsys.readouterr().err


def test_labels_map_back_to_original_pixels():
    # a 200x100 (w x h) image letterboxed into 64x64: ratio 0.32, 16 px of padding on top and bottom
    original_hw, ratio_pad = (100, 200), ((0.32, 0.32), (0.0, 16.0))
    labels = torch.tensor([[4, 0.5, 0.5, 0.5, 0.25]])  # centre of the canvas, 32 x 16 px
    mapped = labels_in_original(labels, (64, 64), original_hw, ratio_pad)
    assert torch.allclose(mapped, torch.tensor([[4, 50.0, 25.0, 150.0, 75.0]]), atol=1e-4)


def test_evaluate_on_synthetic_data_restores_modes_and_writes_plots(tmp_path):
    data_yaml = make_domain(tmp_path / "synthetic", "target", n_images=6, imgsz=64, seed=0)
    data = load_dataset(data_yaml)
    samples = data.val or data.train
    loader = build_dataloader(samples, 64, 4, augment=False, hyp=load_hyp("none"), rect=True, pad=0.5)
    model = build_model("yolov5n", nc=len(data.names))
    model.train()
    model.model[0].bn.eval()  # e.g. a frozen BatchNorm: must stay in eval mode after validation
    loss = ComputeLoss(model, load_hyp("low"))
    metrics = evaluate(model, loader, data.names, compute_loss=loss, plots_dir=tmp_path / "plots")
    assert model.training and not model.model[0].bn.training and model.model[1].bn.training
    assert len(metrics["loss"]) == 3 and all(value > 0 for value in metrics["loss"])
    assert metrics["images"] == len(samples)
    assert metrics["instances"] == sum(len(s.labels) for s in samples)
    assert {row["class_id"] for row in metrics["per_class"]} <= set(range(len(data.names)))
    for key in ("precision", "recall", "map50", "map50_95"):
        assert 0.0 <= metrics[key] <= 1.0
    assert (tmp_path / "plots" / "pr_curve.png").exists()
    assert (tmp_path / "plots" / "confusion_matrix.png").exists()


def test_val_rejects_weights_for_other_classes(official_weights, tmp_path, capsys):
    data_yaml = make_domain(tmp_path / "synthetic", "target", n_images=4, imgsz=64, seed=0)
    code = main(["val", "--weights", str(official_weights), "--data", str(data_yaml), "--imgsz", "64",
                 "--out", str(tmp_path / "val")])  # fmt: skip
    assert code == 2
    assert "80 classes" in capsys.readouterr().err
    assert not (tmp_path / "val" / "metrics.json").exists()


def test_forwards_of_part_of_a_batch_give_the_same_metrics_and_loss(tmp_path):
    data_yaml = make_domain(tmp_path / "synthetic", "target", n_images=12, imgsz=64, seed=1)
    data = load_dataset(data_yaml)
    loader = build_dataloader(data.train, 64, 8, augment=False, hyp=load_hyp("none"), rect=True, pad=0.5)
    torch.manual_seed(0)
    model = build_model("yolov5n", nc=len(data.names))
    loss = ComputeLoss(model, load_hyp("low"))
    whole = evaluate(model, loader, data.names, compute_loss=loss, image_stats=True)
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    parts = evaluate(model, loader, data.names, compute_loss=loss, image_stats=True, forward_batch=3)
    assert max(sizes) == 3 and sum(sizes) == len(data.train)  # every image, at most 3 per forward
    for key in ("precision", "recall", "map50", "map50_95"):
        assert parts[key] == pytest.approx(whole[key], abs=1e-6)
    assert parts["loss"] == pytest.approx(whole["loss"], rel=1e-5)
    for key, values in whole["image_stats"].items():
        assert parts["image_stats"][key] == pytest.approx(values, abs=1e-5), key
