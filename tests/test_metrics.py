"""Reference-style mAP (spec §7) against the coco8 fixture, COCO metrics, matching and confusion matrix."""

import json

import numpy as np
import pytest
import torch

from yolo_transfer.engine.metrics import (
    ConfusionMatrix,
    ap_per_class,
    average_precision,
    coco_metrics,
    fitness,
    match_predictions,
)


@pytest.fixture
def coco8_val(reference_dir):
    return json.loads((reference_dir / "coco8_val.json").read_text())


def reference_style(per_image: list[dict]) -> tuple[dict, list[dict]]:
    """Metric summary and COCO inputs from the fixture's per-image detections and labels."""
    tp, conf, pred_cls, target_cls, images = [], [], [], [], []
    for image in per_image:
        detections = torch.tensor(image["detections_xyxy_conf_cls"]).reshape(-1, 6)
        labels = torch.tensor(image["labels_cls_xyxy"]).reshape(-1, 5)
        tp.append(match_predictions(detections, labels))
        conf.append(detections[:, 4].numpy())
        pred_cls.append(detections[:, 5].numpy())
        target_cls.append(labels[:, 0].numpy())
        images.append(
            {
                "width": image["width"],
                "height": image["height"],
                "labels": labels.numpy(),
                "detections": detections.numpy(),
            }
        )
    result = ap_per_class(*(np.concatenate(x) for x in (tp, conf, pred_cls, target_cls)))
    return result.summary(), images


def test_metrics_match_reference_on_coco8_val(coco8_val):
    summary, _ = reference_style(coco8_val["per_image"])
    assert summary["precision"] == pytest.approx(coco8_val["P"], abs=1e-4)
    assert summary["recall"] == pytest.approx(coco8_val["R"], abs=1e-4)
    assert summary["map50"] == pytest.approx(coco8_val["mAP50"], abs=1e-4)
    assert summary["map50_95"] == pytest.approx(coco8_val["mAP50_95"], abs=1e-4)


def test_coco_metrics_on_coco8_val_are_consistent(coco8_val):
    summary, images = reference_style(coco8_val["per_image"])
    coco = coco_metrics(images)
    assert set(coco) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    # different matching and interpolation (spec §7), but the same detections: close, not equal
    assert coco["AP50"] == pytest.approx(summary["map50"], abs=0.03)
    assert coco["AP"] == pytest.approx(summary["map50_95"], abs=0.03)
    assert 0 < coco["AP"] < coco["AP50"] < 1 and 0 < coco["AP75"] < coco["AP50"]
    assert all(0 <= coco[k] <= 1 for k in ("APs", "APm", "APl"))


def perfect_case() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    labels = [
        torch.tensor([[0, 10, 10, 60, 80], [1, 100, 40, 300, 200]], dtype=torch.float32),
        torch.tensor([[1, 5, 5, 400, 300]], dtype=torch.float32),
    ]
    detections = [torch.cat((lab[:, 1:], torch.full((len(lab), 1), 0.9), lab[:, :1]), 1) for lab in labels]
    return detections, labels


def test_perfect_predictions():
    detections, labels = perfect_case()
    tp = np.concatenate([match_predictions(d, lab) for d, lab in zip(detections, labels, strict=True)])
    assert tp.all()
    result = ap_per_class(
        tp,
        np.concatenate([d[:, 4].numpy() for d in detections]),
        np.concatenate([d[:, 5].numpy() for d in detections]),
        np.concatenate([lab[:, 0].numpy() for lab in labels]),
    )
    summary = result.summary()
    assert summary["precision"] == pytest.approx(1.0) and summary["recall"] == pytest.approx(1.0)
    # the reference ramps precision to 0 at recall 1: a perfect class gets 1 - 0.01 / 2 (last trapezoid)
    assert summary["map50"] == pytest.approx(0.995) and summary["map50_95"] == pytest.approx(0.995)
    images = [
        {"width": 640, "height": 480, "labels": lab.numpy(), "detections": d.numpy()}
        for d, lab in zip(detections, labels, strict=True)
    ]
    coco = coco_metrics(images)
    assert coco["AP"] == 1.0 and coco["AP50"] == 1.0 and coco["AP75"] == 1.0


def test_average_precision_two_point_curve():
    # envelope: 1 up to recall 0.5, then linear to 0.5 at recall 1, then the appended drop to 0 at recall 1
    ap, _, _ = average_precision(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    assert ap == pytest.approx(0.5 + 0.5 * 0.75 - 0.01 * 0.5 / 2)


def test_matching_is_done_per_threshold_and_class():
    labels = torch.tensor([[3, 0, 0, 100, 100]], dtype=torch.float32)
    detections = torch.tensor(
        [
            [0, 0, 100, 67, 0.9, 3],  # IoU 0.67, most confident: takes the label up to threshold 0.65
            [0, 0, 100, 100, 0.5, 3],  # IoU 1: takes it at the thresholds 0.7 .. 0.95
            [0, 0, 100, 100, 0.4, 2],  # perfect box, wrong class
        ]
    )
    correct = match_predictions(detections, labels)
    assert correct.tolist() == [[True] * 4 + [False] * 6, [False] * 4 + [True] * 6, [False] * 10]


def test_matching_resolves_labels_like_the_reference():
    # IoUs: D0 (conf .9) L0 .83, L1 .80; D1 (conf .8) L0 .90, L1 .58. Every detection keeps its best
    # label (L0), then L0 goes to the most confident of them: D0 true, D1 false, L1 unmatched
    # (greedy one-to-one by IoU would match both).
    labels = torch.tensor([[0, 0, 0, 100, 100], [0, 0, 20, 100, 120]], dtype=torch.float32)
    detections = torch.tensor([[0, 9, 100, 109, 0.9, 0], [0, 0, 100, 90, 0.8, 0]])
    correct = match_predictions(detections, labels)
    assert correct[:, 0].tolist() == [True, False]


def test_ap_per_class_ignores_unlabelled_classes_and_zeroes_missed_ones():
    tp = np.array([[True] * 10, [False] * 10])
    conf = np.array([0.9, 0.8])
    pred_cls = np.array([0, 7])  # class 7 has no labels: ignored
    target_cls = np.array([0, 2])  # class 2 has no predictions: AP 0
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    assert result.classes.tolist() == [0, 2]
    assert result.ap[1].tolist() == [0.0] * 10
    assert result.ap[0, 0] == pytest.approx(0.995)
    assert result.summary()["map50"] == pytest.approx(0.995 / 2)


def test_fitness_weights_map50_95():
    assert fitness({"map50": 0.5, "map50_95": 0.3, "precision": 1.0}) == pytest.approx(0.05 + 0.27)


def test_confusion_matrix_counts_hits_misses_and_spurious():
    matrix = ConfusionMatrix(nc=3)
    labels = torch.tensor([[0, 0, 0, 50, 50], [1, 100, 100, 200, 200]], dtype=torch.float32)
    detections = torch.tensor(
        [
            [0, 0, 50, 50, 0.9, 2],  # matches label 0 with the wrong class
            [300, 300, 350, 350, 0.8, 1],  # matches nothing
            [100, 100, 200, 200, 0.1, 1],  # below conf 0.25: not counted, so label 1 is missed
        ]
    )
    matrix.update(detections, labels)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[2, 0] = 1  # predicted 2, true 0
    expected[3, 1] = 1  # label of class 1 missed (background row)
    expected[1, 3] = 1  # spurious class-1 detection (background column)
    assert (matrix.matrix == expected).all()
