"""The Python API (``import yolo_transfer as yt``) end to end on tiny synthetic data."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import yolo_transfer as yt
from yolo_transfer.cli import main
from yolo_transfer.data import load_dataset
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.errors import CheckpointError, ConfigError, DataError
from yolo_transfer.strategies import list_strategies

DEMO = Path(__file__).resolve().parents[1] / "yolo_transfer" / "assets" / "demo_yolov5n_source.safetensors"
TINY = {"imgsz": 64, "batch": 4, "workers": 0, "device": "cpu", "noplots": True}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """12 synthetic target-domain images at 64 px (a val split is made from them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YOLO_TRANSFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield make_domain(tmp_path_factory.mktemp("data"), "target", n_images=12, imgsz=64, seed=5)


@pytest.fixture(scope="module")
def model():
    return yt.load(DEMO, device="cpu")


def test_load_and_predict_returns_dataclasses_like_the_cli(model, data, tmp_path):
    assert model.names == ["circle", "square", "triangle", "cross"] and model.imgsz == 128
    image = sorted((data.parent / "images").rglob("*.jpg"))[0]
    [from_path] = model.predict(image, conf=0.1)
    [from_array] = model.predict([cv2.imread(str(image))], conf=0.1)
    assert from_path.image == str(image) and from_array.image == "array[0]"
    assert (from_path.width, from_path.height) == (64, 64)
    assert len(from_path.detections) > 0 and from_path.detections == from_array.detections
    first = from_path.detections[0]
    assert first.name == model.names[first.class_id] and 0.1 < first.conf <= 1 and len(first.xyxy) == 4
    assert from_path.boxes.shape == (len(from_path.detections), 4) and from_path.scores.dtype == np.float32
    # the command gives the same detections: both run engine.predict.detect
    out = tmp_path / "cli"
    assert (
        main(["predict", str(DEMO), str(image), "--conf", "0.1", "--device", "cpu", "--out", str(out)]) == 0
    )
    cli = json.loads((out / "predictions.json").read_text())[0]["detections"]
    assert [d["class_id"] for d in cli] == from_path.class_ids.tolist()
    assert np.abs(np.array([d["xyxy"] for d in cli]) - from_path.boxes).max() <= 0.01
    # a folder expands to its images
    assert len(model.predict(image.parent)) == len(list(image.parent.glob("*.jpg")))


def test_val_returns_the_metrics_the_command_writes(model, data, tmp_path):
    metrics = model.val(data, batch=4, workers=0, out=str(tmp_path / "val"))
    written = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert metrics == written and 0 <= metrics["map50_95"] <= metrics["map50"] <= 1
    assert metrics["imgsz"] == 128 and metrics["images"] > 0


def test_train_one_epoch_then_load_export_and_predict(model, data, tmp_path):
    run = model.train(data, strategy="freeze", epochs=1, out=str(tmp_path / "run"), **TINY)
    assert isinstance(run, yt.TrainRun) and run.summary["epochs"] == 1 and run.summary["strategy"] == "freeze"
    assert run.best_weights.is_file() and run.last_weights.is_file() and "map50_95" in run.best
    trained = yt.load(run.best_weights, device="cpu")
    assert trained.names == load_dataset(data).names != model.names  # the target domain's classes
    exported = trained.export("onnx", imgsz=64, out=tmp_path / "best.onnx")
    assert exported.path.is_file() and exported.parity.max_abs_diff <= 1e-4
    onnx_model = yt.load(exported.path, device="cpu")
    assert onnx_model.imgsz == 64 and onnx_model.names == trained.names
    image = sorted((data.parent / "images").rglob("*.jpg"))[0]
    a, b = trained.predict(image, imgsz=64, conf=0.01)[0], onnx_model.predict(image, conf=0.01)[0]
    assert a.class_ids.tolist() == b.class_ids.tolist()
    assert np.abs(a.boxes - b.boxes).max(initial=0) <= 0.01


def test_compare_returns_table_winner_and_report(data, tmp_path):
    result = yt.compare(
        data, DEMO, strategies=["freeze", "full"], budget="epochs=1", seeds=[0], out=str(tmp_path / "cmp"),
        **TINY,
    )  # fmt: skip
    assert [row["strategy"] for row in result.table] == ["freeze", "full"]
    assert all(row["runs_done"] == 1 and 0 <= row["best_map50_95"] <= 1 for row in result.table)
    assert result.winner in ("freeze", "full") and result.reason
    assert result.report_html.is_file() and result.report_md.is_file()
    assert json.loads(result.results_json.read_text())["recommendation"]["strategy"] == result.winner


def test_advise_returns_strategy_reasons_and_command(data):
    advice = yt.advise(data, DEMO, imgsz=64, max_images=8, compute=False)
    assert advice.strategy in list_strategies() and advice.settings["strategy"] == advice.strategy
    assert set(advice.reasons) == set(advice.settings) and all(advice.reasons.values())
    assert (
        advice.command.startswith("yolo-transfer train ")
        and f"--strategy {advice.strategy}" in advice.command
    )


def test_errors_are_raised_not_exits(model, data, tmp_path):
    with pytest.raises(CheckpointError, match="missing.pt"):
        yt.load(tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="unknown option 'bogus'"):
        model.val(data, bogus=1)
    with pytest.raises(ConfigError, match="--format 'tflite'"):
        model.export("tflite")
    with pytest.raises(ConfigError, match="unknown option"):
        yt.export(DEMO, "onnx", resolution=64)
    with pytest.raises(DataError, match="nothing.jpg"):
        model.predict(tmp_path / "nothing.jpg")
    with pytest.raises(ConfigError, match="multiple of 32"):
        model.predict(np.zeros((64, 64, 3), np.uint8), imgsz=100)


def test_compare_and_advise_stay_callable_after_their_subpackages_are_imported():
    import yolo_transfer.advise
    import yolo_transfer.compare  # noqa: F401  (sets the package attributes to the subpackages)

    assert yt.compare is yolo_transfer.compare and callable(yt.compare) and callable(yt.advise)
    with pytest.raises(ConfigError):
        yt.compare("d.yaml", "w.pt", unknown_option=1)
