"""val and predict use the image size recorded in the weights, and warn when told another."""

import json

import cv2
import numpy as np

from yolo_transfer.cli import main
from yolo_transfer.compare.demo import shipped_weights
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.engine.inference_size import OFFICIAL_IMGSZ, inference_imgsz, recorded_imgsz
from yolo_transfer.models.checkpoint import read_safetensors


def test_recorded_size_is_found_in_our_and_official_metadata():
    assert recorded_imgsz({"imgsz": 256}) == 256
    assert recorded_imgsz({"provenance": {"imgsz": 128}}) == 128
    assert recorded_imgsz({"official": {"imgsz": [640, 640]}}) == 640
    assert recorded_imgsz({"official": {"imgsz": None}}) is None


def test_default_is_the_recorded_size_and_an_override_warns():
    assert inference_imgsz(None, {"imgsz": 256}) == (256, None)
    assert inference_imgsz(256, {"imgsz": 256}) == (256, None)
    size, warning = inference_imgsz(640, {"imgsz": 256})
    assert size == 640 and "differs from the 256 px these weights were trained at" in warning


def test_official_weights_without_a_record_default_to_640():
    assert inference_imgsz(None, {"official": {"imgsz": None}}) == (OFFICIAL_IMGSZ, None)
    size, warning = inference_imgsz(320, {})
    assert size == 320 and "default 640 px" in warning


def test_demo_checkpoint_records_128(tmp_path):
    _, metadata = read_safetensors(shipped_weights())
    assert recorded_imgsz(metadata) == 128


def test_predict_uses_the_recorded_size_and_warns_on_another(tmp_path, capsys):
    image = tmp_path / "img.jpg"
    cv2.imwrite(str(image), np.full((300, 400, 3), 127, np.uint8))
    common = ["predict", str(shipped_weights()), str(image), "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert "warning" not in capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "b"), "--imgsz", "320"]) == 0
    assert "warning: --imgsz 320 differs from the 128 px" in capsys.readouterr().out


def test_val_records_the_size_it_used(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path / "cache"))
    data = make_domain(tmp_path / "data", "target", n_images=10, imgsz=96, seed=0)
    args = [
        "val",
        "--weights",
        str(shipped_weights()),
        "--data",
        str(data),
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    assert main([*args, "--out", str(tmp_path / "val")]) == 0
    assert json.loads((tmp_path / "val" / "metrics.json").read_text())["imgsz"] == 128
