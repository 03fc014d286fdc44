"""``yolo-transfer export``: ONNX / TorchScript files, their metadata and parity, and running them in
``predict`` / ``val`` (onnxruntime on the CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path

from yolo_transfer.cli import main
from yolo_transfer.data.synthetic import make_domain
from yolo_transfer.deploy import OPSET, export
from yolo_transfer.deploy.parity import letterboxed_batch, read_check_image
from yolo_transfer.deploy.runtime import load_inference_model
from yolo_transfer.engine.postprocess import non_max_suppression
from yolo_transfer.errors import CheckpointError, ConfigError
from yolo_transfer.models import load_model
from yolo_transfer.models.checkpoint import file_sha256

onnx = pytest.importorskip("onnx", reason="the [export] extra (onnx, onnxruntime) is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")

DEMO = Path(__file__).resolve().parents[1] / "yolo_transfer" / "assets" / "demo_yolov5n_source.safetensors"
ANCHORS_128 = 3 * (16 * 16 + 8 * 8 + 4 * 4)  # predictions of a 128x128 input (strides 8, 16, 32)


@pytest.fixture(scope="module")
def reference_model():
    model, _ = load_model(DEMO)
    return model.fuse()


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    return export(DEMO, "onnx", imgsz=128, dynamic=True, out=tmp_path_factory.mktemp("x") / "demo.onnx")


def torch_output(model, images: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(images)[0].numpy()


def ort_output(path: Path, images: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.numpy()})[0]


def test_onnx_metadata_opset_and_parity_over_batches_and_sizes(dynamic_onnx, reference_model):
    proto = onnx.load(str(dynamic_onnx.path))
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["names"] == reference_model.names and props["nc"] == 4
    assert props["stride"] == [8.0, 16.0, 32.0] and props["imgsz"] == 128 and props["dynamic"] is True
    assert props["sha256"] == file_sha256(DEMO) and props["source"] == str(DEMO)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    # the export-time check covered two batch sizes x two image sizes, within 1e-4 and with detections
    shapes = {check.shape for check in dynamic_onnx.parity.checks}
    assert shapes == {(1, 3, 128, 128), (2, 3, 128, 128), (1, 3, 128, 96), (2, 3, 128, 96)}
    assert dynamic_onnx.parity.max_abs_diff <= 1e-4 and all(
        c.detections > 0 for c in dynamic_onnx.parity.checks
    )
    # independently: another batch size and a shape the check did not use, scores within 1e-4
    images = torch.rand(3, 3, 96, 160)
    expected, got = torch_output(reference_model, images), ort_output(dynamic_onnx.path, images)
    assert got.shape == expected.shape == (3, 3 * (12 * 20 + 6 * 10 + 3 * 5), 9)
    assert np.abs(got[..., 4:] - expected[..., 4:]).max() <= 1e-4
    assert np.abs(got[..., :4] - expected[..., :4]).max() / 160 <= 1e-4


def test_cli_static_export_prints_opset_and_pads_smaller_inputs(tmp_path, reference_model, capsys):
    out = tmp_path / "static.onnx"
    assert main(["export", str(DEMO), "--imgsz", "128", "--batch", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ONNX opset {OPSET}" in printed and "2x3x128x128" in printed and "parity max abs diff" in printed
    assert ort_output(out, torch.rand(2, 3, 128, 128)).shape == (2, ANCHORS_128, 9)

    model, metadata = load_inference_model(out)
    assert metadata["imgsz"] == 128 and metadata["batch"] == 2 and model.names == reference_model.names
    # 3 images of 96x128: padded to 128x128 at the bottom with 114, run as batches of 2 (the last filled)
    images = torch.rand(3, 3, 96, 128)
    decoded, _ = model(images)
    padded = torch.nn.functional.pad(images, (0, 0, 0, 32), value=114 / 255)
    assert decoded.shape == (3, ANCHORS_128, 9)
    assert np.abs(decoded.numpy()[..., 4:] - torch_output(reference_model, padded)[..., 4:]).max() <= 1e-4
    with pytest.raises(ConfigError, match="exported for 128x128"):
        model(torch.rand(1, 3, 160, 128))


def test_torchscript_export_metadata_and_runtime(tmp_path, reference_model):
    result = export(DEMO, "torchscript", imgsz=64, out=tmp_path / "demo.torchscript")
    assert result.opset is None and result.parity.max_abs_diff <= 1e-4
    model, metadata = load_inference_model(result.path)
    assert metadata["sha256"] == file_sha256(DEMO) and metadata["imgsz"] == 64
    assert model.names == reference_model.names and model.nc == 4
    images = torch.rand(2, 3, 64, 64)
    assert np.abs(model(images)[0].numpy() - torch_output(reference_model, images)).max() <= 1e-3


def test_nms_in_the_graph_matches_non_max_suppression(tmp_path, reference_model):
    result = export(DEMO, "onnx", imgsz=128, batch=2, nms=True, out=tmp_path / "nms.onnx")
    assert result.metadata["nms"] == {"conf": 0.25, "iou": 0.45}
    images = letterboxed_batch(read_check_image(None, 128), (128, 128), 2, 32)
    rows = ort_output(result.path, images)  # [image, x1, y1, x2, y2, conf, class]
    expected = non_max_suppression(torch.from_numpy(torch_output(reference_model, images)), 0.25, 0.45)
    assert len(rows) == sum(len(found) for found in expected) > 0
    for index, found in enumerate(expected):
        mine = rows[rows[:, 0] == index][:, 1:]
        assert mine[:, 5].tolist() == found[:, 5].tolist()
        assert np.abs(mine[:, :5] - found[:, :5].numpy()).max() <= 1e-2  # pixels and confidence
    with pytest.raises(CheckpointError, match="--nms"):
        load_inference_model(result.path)


def test_half_export_runs_in_fp16(tmp_path, reference_model):
    result = export(DEMO, "onnx", imgsz=64, half=True, out=tmp_path / "half.onnx")
    assert result.parity.tolerance == 1e-2 and result.parity.max_abs_diff <= 1e-2
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    model, _ = load_inference_model(result.path)
    images = torch.rand(1, 3, 64, 64)
    assert (
        np.abs(model(images)[0].numpy()[..., 4:] - torch_output(reference_model, images)[..., 4:]).max()
        < 2e-2
    )


def test_predict_and_val_run_exported_models(dynamic_onnx, tmp_path):
    data = make_domain(tmp_path / "data", "source", n_images=10, imgsz=128, seed=4)
    metrics = {}
    for weights in (DEMO, dynamic_onnx.path):
        out = tmp_path / f"val-{weights.suffix}"
        args = ["val", "--weights", str(weights), "--data", str(data), "--batch", "4", "--workers", "0"]
        assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
        metrics[weights.suffix] = json.loads((out / "metrics.json").read_text())
        assert metrics[weights.suffix]["imgsz"] == 128  # from the weights' metadata
    assert metrics[".onnx"]["map50_95"] > 0.3
    assert metrics[".onnx"]["map50_95"] == pytest.approx(metrics[".safetensors"]["map50_95"], abs=1e-3)

    image = sorted((data.parent / "images" / "val").glob("*.jpg"))[0]
    for weights in (DEMO, dynamic_onnx.path):
        out = tmp_path / f"predict-{weights.suffix}"
        assert main(["predict", str(weights), str(image), "--device", "cpu", "--out", str(out)]) == 0
    found = [
        json.loads((tmp_path / f"predict-{suffix}" / "predictions.json").read_text())[0]
        for suffix in (".safetensors", ".onnx")
    ]
    assert [d["class_id"] for d in found[0]["detections"]] == [d["class_id"] for d in found[1]["detections"]]
    boxes = [np.array([d["xyxy"] for d in f["detections"]]) for f in found]
    assert len(boxes[0]) > 0 and np.abs(boxes[0] - boxes[1]).max() <= 0.05


def test_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    fake_onnx = tmp_path / "fake.onnx"
    fake_onnx.write_text("not a model")
    cases = [
        (["export", str(DEMO), "--format", "tflite"], "--format 'tflite'"),
        (["export", str(not_a_model)], "notes.txt"),
        (["export", str(DEMO), "--imgsz", "100"], "multiple of the model's largest stride 32"),
        (["export", str(DEMO), "--out", str(tmp_path / "x.onnx.bak")], "must end with .onnx"),
        (["predict", str(fake_onnx), str(not_a_model), "--device", "cpu", "--out", str(tmp_path / "p")],
         "not a readable ONNX model"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    real_find_spec = __import__("importlib.util").util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name: None if name == "onnx" else real_find_spec(name)
    )
    assert main(["export", str(DEMO)]) == 2
    assert "yolo-transfer[export]" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.onnx*tmp"))  # nothing half-written


@pytest.mark.slow
def test_official_yolov5n_onnx_parity_on_bus_and_coco8_map(tmp_path):
    weights = shared_path("weights", "yolov5n.pt")
    bus = shared_path("data", "yolov5_samples", "bus.jpg")
    coco8 = shared_path("data", "coco8", "coco8.yaml")
    result = export(weights, "onnx", imgsz=640, dynamic=True, check_image=bus, out=tmp_path / "yolov5n.onnx")
    assert result.parity.max_abs_diff <= 1e-4  # raw output (boxes / 640) and the detections after NMS
    assert result.parity.checks[0].detections >= 4  # bus.jpg: bus and people, the same in both
    maps = {}
    for name in ("yolov5n.pt", "yolov5n.onnx"):
        path = weights if name.endswith(".pt") else result.path
        out = tmp_path / f"val-{name}"
        args = ["val", "--weights", str(path), "--data", str(coco8), "--imgsz", "640", "--batch", "8"]
        assert main([*args, "--workers", "0", "--device", "cpu", "--out", str(out)]) == 0
        maps[name] = json.loads((out / "metrics.json").read_text())["map50_95"]
    assert maps["yolov5n.pt"] == pytest.approx(0.484, abs=0.01)
    assert maps["yolov5n.onnx"] == pytest.approx(maps["yolov5n.pt"], abs=0.002)
