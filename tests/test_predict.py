"""Letterbox, NMS / box rescaling and the predict command."""

import json

import cv2
import numpy as np
import pytest
import torch

from yolo_transfer.cli import main
from yolo_transfer.data.letterbox import letterbox
from yolo_transfer.engine.postprocess import non_max_suppression, scale_boxes
from yolo_transfer.models import build_model, save_model


def test_letterbox_shapes_and_padding():
    image = np.full((1080, 810, 3), 7, np.uint8)
    boxed, ratio, pad = letterbox(image, 640)  # auto: pad only to a multiple of 32
    assert boxed.shape == (640, 480, 3) and ratio == (640 / 1080, 640 / 1080) and pad == (0.0, 0.0)

    boxed, _, pad = letterbox(image, 640, auto=False)
    assert boxed.shape == (640, 640, 3) and pad == (80.0, 0.0)
    assert (boxed[:, :80] == 114).all() and (boxed[:, 560:] == 114).all() and (boxed[:, 80:560] == 7).all()

    boxed, ratio, pad = letterbox(np.zeros((101, 50, 3), np.uint8), (128, 128), auto=False, scaleup=False)
    assert ratio == (1.0, 1.0) and pad == (39.0, 13.5)
    assert (boxed[:13, 60] == 114).all() and (boxed[13:114, 60] == 0).all() and (boxed[114:, 60] == 114).all()

    boxed, ratio, _ = letterbox(np.zeros((100, 50, 3), np.uint8), (64, 96), auto=False, scale_fill=True)
    assert boxed.shape == (64, 96, 3) and ratio == (96 / 50, 64 / 100)


def decoded(rows):
    """A (1, n, 5 + nc) eval output from rows [cx, cy, w, h, obj, class probs...]."""
    return torch.tensor([rows], dtype=torch.float32)


def test_nms_filters_suppresses_and_keeps_classes_apart():
    pred = decoded([
        [50, 50, 20, 20, 0.9, 0.9, 0.1],   # conf 0.81 class 0
        [52, 50, 20, 20, 0.9, 0.8, 0.1],   # overlaps the first, same class: suppressed
        [51, 50, 20, 20, 0.9, 0.1, 0.7],   # overlaps, other class: kept
        [150, 50, 20, 20, 0.2, 0.9, 0.9],  # objectness below 0.25: dropped
        [150, 150, 10, 10, 0.5, 0.4, 0.3], # conf 0.2 < 0.25: dropped
    ])  # fmt: skip
    found = non_max_suppression(pred, 0.25, 0.45)[0]
    assert found[:, 5].tolist() == [0.0, 1.0]
    assert torch.allclose(found[0], torch.tensor([40.0, 40.0, 60.0, 60.0, 0.81, 0.0]))
    assert non_max_suppression(pred, 0.25, 0.45, agnostic=True)[0][:, 5].tolist() == [0.0]
    assert non_max_suppression(pred, 0.25, 0.45, classes=[1])[0][:, 5].tolist() == [1.0]
    assert len(non_max_suppression(pred, 0.25, 0.45, max_det=1)[0]) == 1
    multi = non_max_suppression(decoded([[50, 50, 20, 20, 1.0, 0.6, 0.5]]), 0.25, 0.45, multi_label=True)[0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]


def test_scale_boxes_inverts_letterbox():
    image = np.zeros((300, 500, 3), np.uint8)
    boxed, (ratio, _), (pad_w, pad_h) = letterbox(image, 320, auto=False)
    original = torch.tensor([[100.0, 50.0, 400.0, 250.0], [-5.0, 10.0, 520.0, 290.0]])
    on_input = original * ratio + torch.tensor([pad_w, pad_h, pad_w, pad_h])
    back = scale_boxes(boxed.shape[:2], on_input, image.shape[:2])
    assert torch.allclose(back[0], original[0], atol=1e-4)
    assert back[1].tolist() == pytest.approx([0.0, 10.0, 500.0, 290.0], abs=1e-4)  # clipped to the image
    explicit = scale_boxes(boxed.shape[:2], on_input, image.shape[:2], ((ratio, ratio), (pad_w, pad_h)))
    assert torch.allclose(explicit, back)


def test_predict_bus_matches_reference(official_weights, reference_dir, tmp_path):
    reference = np.load(reference_dir / "yolov5n_bus_forward.npz")
    bus = reference_dir.parent / "data" / "yolov5_samples" / "bus.jpg"
    # the fixture's network input is detect.py's letterbox (auto=True) of bus.jpg, bit for bit
    boxed, _, _ = letterbox(cv2.imread(str(bus)), 640, auto=True)
    assert np.array_equal(boxed[:, :, ::-1], reference["input_rgb_uint8"])

    assert main(["predict", str(official_weights), str(bus), "--out", str(tmp_path / "out")]) == 0
    [result] = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert (result["image"], result["width"], result["height"]) == (str(bus), 810, 1080)
    expected = reference["detections"]
    found = result["detections"]
    assert [d["class_id"] for d in found] == expected[:, 5].astype(int).tolist()
    assert [d["name"] for d in found] == ["person"] * 4 + ["bus"]
    for detection, row in zip(found, expected, strict=True):
        assert detection["conf"] == pytest.approx(row[4], abs=0.01)
        assert np.abs(np.array(detection["xyxy"]) - row[:4]).max() <= 2
    annotated = cv2.imread(str(tmp_path / "out" / "bus.jpg"))
    assert annotated.shape == (1080, 810, 3)


def test_predict_folder_skips_missing_and_unreadable_images(tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    save_model(build_model("yolov5n", names=["blob"]), weights, {})
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (90, 120, 3)), ("b.jpg", (64, 48, 3))):
        cv2.imwrite(str(folder / name), rng.integers(0, 255, shape, dtype=np.uint8))
    (folder / "broken.jpg").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")

    out = tmp_path / "out"
    args = [
        "predict",
        str(weights),
        str(folder),
        str(tmp_path / "missing.jpg"),
        "--imgsz",
        "128",
        "--conf",
        "0.001",
    ]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "broken.jpg: not a readable image" in printed and "missing.jpg: no such file" in printed
    results = json.loads((out / "predictions.json").read_text())
    assert [(r["image"], r["width"], r["height"]) for r in results] == [
        (str(folder / "a.png"), 120, 90), (str(folder / "b.jpg"), 48, 64),
    ]  # fmt: skip
    for result in results:
        for detection in result["detections"]:
            assert detection["name"] == "blob" and 0.001 < detection["conf"] <= 1
            x1, y1, x2, y2 = detection["xyxy"]
            assert 0 <= x1 <= x2 <= result["width"] and 0 <= y1 <= y2 <= result["height"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.jpg", "predictions.json"]
