"""Weights files: safe reading of official .pt checkpoints, our .safetensors format, transfer, convert."""

import copy
import hashlib
import json
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from yolo_transfer.cli import main
from yolo_transfer.errors import CheckpointError
from yolo_transfer.models import DetectionModel, build_model, load_model, save_model
from yolo_transfer.models.common import C3, SPPF, Bottleneck, Concat, Conv
from yolo_transfer.models.yolo import Detect


def create_marker(path: str) -> None:
    Path(path).write_text("code ran")


class Payload:
    """Unpickling this calls create_marker: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return create_marker, (str(self.marker),)


def save_like_yolov5(path: Path, ckpt: dict, model_class: str, monkeypatch) -> None:
    """torch.save ``ckpt`` with its models pickled under the reference's class paths (models.yolo.*, ...)."""
    real_to_path = {
        DetectionModel: ("models.yolo", model_class),
        Detect: ("models.yolo", "Detect"),
        **{cls: ("models.common", cls.__name__) for cls in (Conv, C3, Bottleneck, SPPF, Concat)},
    }
    packages = {name: types.ModuleType(name) for name in ("models", "models.yolo", "models.common")}
    fakes = {}
    for real, (module_name, class_name) in real_to_path.items():
        fakes[real] = type(class_name, (real,), {"__module__": module_name, "__qualname__": class_name})
        setattr(packages[module_name], class_name, fakes[real])
    for name, package in packages.items():
        monkeypatch.setitem(sys.modules, name, package)
    for model in ckpt.values():
        for module in model.modules() if isinstance(model, torch.nn.Module) else ():
            module.__class__ = fakes.get(type(module), type(module))
    torch.save({"epoch": -1, "best_fitness": None, "updates": None, "optimizer": None, **ckpt}, path)


@pytest.mark.parametrize(
    "model_class, names_as_dict, under", [("DetectionModel", True, "ema"), ("Model", False, "model")]
)
def test_reads_checkpoints_pickled_by_yolov5(tmp_path, monkeypatch, model_class, names_as_dict, under):
    names = ["cat", "dog", "bird"]
    model = build_model("yolov5n", names=names).half()
    model.names = dict(enumerate(names)) if names_as_dict else names
    # cached grids, as in released files
    model.detect.grid = [torch.zeros(1, 3, 8, 8, 2).half() for _ in range(3)]
    model.detect.anchor_grid = [torch.ones(1, 3, 8, 8, 2).half() for _ in range(3)]
    expected = {k: v.float() for k, v in model.state_dict().items()}
    other = build_model("yolov5n", names=names).half()  # raw model next to the EMA: must not be read
    ckpt = {"ema": model, "model": other} if under == "ema" else {"ema": None, "model": model}
    weights = tmp_path / "custom.pt"
    save_like_yolov5(weights, {**ckpt, "opt": {"imgsz": 320}}, model_class, monkeypatch)

    loaded, metadata = load_model(weights)
    assert metadata["names"] == names and loaded.names == names
    assert metadata["official"]["model_class"] == f"models.yolo.{model_class}"
    assert metadata["imgsz"] == 320
    state = loaded.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert all(t.dtype in (torch.float32, torch.int64) for t in state.values())


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    weights = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker), "ema": None}, weights)

    with pytest.raises(CheckpointError, match=r"refused to load .*create_marker"):
        load_model(weights)
    assert main(["convert", str(weights), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "create_marker" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()

    # control: plain unpickling of the same file does run the payload, so the refusal above is what protects
    with zipfile.ZipFile(weights) as archive:
        pickle.loads(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))))
    assert marker.read_text() == "code ran"


def test_unusable_weights_files_give_clear_errors(tmp_path):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    (tmp_path / "weights.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match="notes.pt: not a zip-format"):
        load_model(tmp_path / "notes.pt")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        load_model(tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        load_model(tmp_path / "weights.onnx")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_model(tmp_path / "missing.pt")


def test_save_and_load_keep_weights_and_metadata(tmp_path):
    model = build_model("yolov5n", names=["a", "b"])
    metadata = {
        "imgsz": 320,
        "strategy": {"name": "freeze", "phases": [{"trainable": ["head"]}]},
        "epochs": 3,
        "metrics": {"map50": np.float32(0.5)},
    }
    path = tmp_path / "run" / "best.safetensors"
    save_model(model.half(), path, metadata)
    assert [p.name for p in path.parent.iterdir()] == ["best.safetensors"]  # no temporary file left

    loaded, read = load_model(path)
    assert read["names"] == ["a", "b"] and read["nc"] == 2 and read["imgsz"] == 320
    assert (
        read["strategy"] == metadata["strategy"] and read["epochs"] == 3 and read["metrics"] == {"map50": 0.5}
    )
    assert read["cfg"] == model.yaml
    state = loaded.state_dict()
    assert all(
        torch.equal(state[k], v.float()) for k, v in model.state_dict().items() if v.is_floating_point()
    )

    with pytest.raises(CheckpointError, match="fused"):
        save_model(copy.deepcopy(model).float().fuse(), tmp_path / "fused.safetensors", {})
    assert not (tmp_path / "fused.safetensors").exists()


def test_convert_official_to_safetensors_gives_identical_outputs(official_weights, tmp_path):
    output = tmp_path / "yolov5n.safetensors"
    assert main(["convert", str(official_weights), str(output)]) == 0

    official, _ = load_model(official_weights)
    ours, metadata = load_model(output)
    images = torch.rand(2, 3, 160, 128)
    with torch.no_grad():
        assert torch.equal(official(images)[0], ours(images)[0])
    assert ours.names == official.names and ours.names[0] == "person"
    with safe_open(str(output), framework="pt") as file:
        header = file.metadata()
        assert file.get_tensor("model.0.conv.weight").dtype == torch.float16  # the released precision, kept
    provenance = json.loads(header["provenance"])
    assert provenance["sha256"] == hashlib.sha256(official_weights.read_bytes()).hexdigest()
    assert json.loads(header["cfg"])["width_multiple"] == 0.25 and json.loads(header["nc"]) == 80
    assert metadata["provenance"] == provenance


def test_transfer_to_new_classes_copies_same_name_rows(official_weights, capsys):
    source, _ = load_model(official_weights)
    model, metadata = load_model(official_weights, names=["widget", "Person", "gadget"])
    out = capsys.readouterr().out
    assert "transferred 343/349 tensors" in out
    assert "model.24.m.0.weight" in out and "model.24.m.2.bias" in out
    assert "class rows copied for: Person" in out
    assert model.nc == 3 and metadata["names"] == ["widget", "Person", "gadget"]
    assert torch.equal(model.model[0].conv.weight, source.model[0].conv.weight)
    assert torch.equal(model.detect.anchors, source.detect.anchors)
    for target_conv, source_conv in zip(model.detect.m, source.detect.m, strict=True):
        for anchor in range(3):
            person_row, coco_person_row = anchor * 8 + 5 + 1, anchor * 85 + 5 + 0
            assert torch.equal(target_conv.weight[person_row], source_conv.weight[coco_person_row])
            assert torch.equal(target_conv.bias[person_row], source_conv.bias[coco_person_row])
            assert not torch.equal(
                target_conv.weight[anchor * 8], source_conv.weight[anchor * 85]
            )  # box: fresh

    model, metadata = load_model(official_weights, nc=3)
    assert metadata["names"] == ["0", "1", "2"] and "class rows" not in capsys.readouterr().out
