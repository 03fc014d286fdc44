"""Weights files: safe reading of official .pt checkpoints, our .safetensors format, transfer, convert."""

import copy
import hashlib
import json
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from official_files import VERSIONS, pickle_bytes, reference_classes, write_checkpoint
from safetensors import safe_open

from yolo_transfer.cli import main
from yolo_transfer.errors import CheckpointError
from yolo_transfer.models import DetectionModel, build_model, load_model, model_groups, save_model


def create_marker(path: str) -> None:
    Path(path).write_text("code ran")


class Payload:
    """Unpickling this calls create_marker: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return create_marker, (str(self.marker),)


def zip_checkpoint(path: Path, payload: bytes) -> Path:
    """A torch-style zip checkpoint whose data.pkl is ``payload``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
        archive.writestr("archive/version", "3\n")
    return path


def call_pickle(module: str, name: str, *args) -> bytes:
    """A protocol-2 pickle that calls ``module.name(*args)`` when loaded, spelled as an attacker would."""
    arguments = pickle.dumps(args, protocol=2)[2:-1]  # without the protocol header and STOP
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + arguments + b"R."


def perturbed(model: DetectionModel) -> DetectionModel:
    """A copy with other weights: the raw training model saved next to the EMA, which must not be read."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(0.5)
    return other


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("stripped", [True, False], ids=["released", "last.pt"])
def test_every_yolov5_version_loads_with_the_official_outputs(official_weights, tmp_path, version, stripped):
    official, _ = load_model(official_weights)
    weights = write_checkpoint(
        tmp_path / f"{version}.pt",
        official,
        version,
        stripped=stripped,
        legacy_anchor_grid=version == "v6.0",  # the v6.0 release's COCO files
        raw_model=perturbed(official),
    )
    keeps_fitness = not stripped or version == "v6.0"  # v6.0's strip_optimizer leaves best_fitness
    data = pickle_bytes(weights)
    if keeps_fitness:  # best_fitness is NumPy data, pickled through _codecs.encode with NumPy 1's names
        assert b"_codecs\nencode\n" in data and b"numpy.core.multiarray\n_reconstruct\n" in data
        assert b"numpy._core" not in data

    model, metadata = load_model(weights)
    images = torch.rand(2, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(model(images)[0], official(images)[0])
    assert model.names == official.names and model.names[0] == "person"
    info = metadata["official"]
    assert info["model_class"] == ("models.yolo.Model" if version < "v6.2" else "models.yolo.DetectionModel")
    assert info["epoch"] == (-1 if stripped else 2)
    assert info["best_fitness"] == (pytest.approx(0.4321) if keeps_fitness else None)
    assert info["date"] == (None if version == "v6.0" else "2022-11-22T10:17:08.123456")
    assert metadata.get("imgsz") == (640 if version >= "v6.2" else None)


def test_v6_0_anchor_grid_buffer_is_in_the_file_and_left_out(tmp_path):
    model = build_model("yolov5n", names=["a", "b"]).eval()
    weights = write_checkpoint(tmp_path / "v6.0.pt", model, "v6.0", legacy_anchor_grid=True)
    with reference_classes("Model"):  # what yolov5's own torch.load sees (issue ultralytics/yolov5#5379)
        pickled = torch.load(weights, map_location="cpu", weights_only=False)["model"]
    anchor_grid = pickled.state_dict()["model.24.anchor_grid"]
    assert anchor_grid.shape == (3, 1, 3, 1, 1, 2)
    assert anchor_grid[2, 0, 2, 0, 0].tolist() == [373.0, 326.0]  # pixels

    loaded, _ = load_model(weights)
    assert "model.24.anchor_grid" not in loaded.state_dict()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(images)[0], model.half().float()(images)[0])


def test_p6_checkpoints_load_with_four_levels(tmp_path):
    model = build_model("yolov5n6", names=["a", "b", "c"]).eval()
    weights = write_checkpoint(tmp_path / "yolov5n6.pt", model, "v7.0", imgsz=1280)

    loaded, metadata = load_model(weights)
    assert metadata["imgsz"] == 1280 and loaded.names == ["a", "b", "c"]
    assert loaded.state_dict()["model.33.anchors"].shape == (4, 3, 2)
    assert loaded.stride.tolist() == [8.0, 16.0, 32.0, 64.0]
    images = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        assert torch.equal(loaded(images)[0], model.half().float()(images)[0])
    assert model_groups(loaded) == {"backbone": list(range(12)), "neck": list(range(12, 33)), "head": [33]}


@pytest.mark.parametrize(
    "version, numpy1, best_fitness, expected",
    [
        ("v6.1", True, np.array([0.25]), 0.25),
        ("v7.0", False, np.array([0.25]), 0.25),
        ("v7.0", True, np.float64(0.75), 0.75),
        ("v6.1", False, np.float32(0.5), 0.5),
        ("v7.0", True, 0.125, 0.125),
    ],
    ids=["array-numpy1", "array-numpy2", "float64-numpy1", "float32-numpy2", "float"],
)
def test_user_checkpoints_with_numpy_values(tmp_path, version, numpy1, best_fitness, expected):
    names = ["cat", "dog", "bird"]  # pickled as a dict from v7.0 on, as a list before
    model = build_model("yolov5n", names=names).eval()
    weights = write_checkpoint(
        tmp_path / "last.pt",
        model,
        version,
        stripped=False,
        best_fitness=best_fitness,
        numpy1=numpy1,
        raw_model=perturbed(model),
    )
    data = pickle_bytes(weights)
    if not isinstance(best_fitness, float):
        assert (b"numpy.core.multiarray\n" in data) == numpy1 and (
            b"numpy._core.multiarray\n" in data
        ) != numpy1

    loaded, metadata = load_model(weights)
    assert metadata["names"] == names and loaded.names == names
    assert metadata["official"]["best_fitness"] == expected
    state = loaded.state_dict()
    reference = model.half().float().state_dict()
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[k], reference[k]) for k in reference)  # the EMA, not the raw model


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


@pytest.mark.parametrize(
    "module, name, make_args",
    [
        ("builtins", "eval", lambda marker: (f"open({str(marker)!r}, 'w').write('code ran')",)),
        ("builtins", "exec", lambda marker: (f"open({str(marker)!r}, 'w').write('code ran')",)),
        ("os", "system", lambda marker: (f"touch {marker}",)),
        ("subprocess", "call", lambda marker: (["touch", str(marker)],)),
        ("numpy", "load", None),  # np.load(file, None, allow_pickle=True) unpickles whatever the file holds
    ],
)
def test_code_running_gadgets_are_refused_by_name(tmp_path, module, name, make_args):
    marker = tmp_path / "marker"
    if make_args is None:
        gadget = tmp_path / "gadget.npy"
        np.save(gadget, np.array([Payload(marker)], dtype=object), allow_pickle=True)
        args = (str(gadget), None, True)
    else:
        args = make_args(marker)
    payload = call_pickle(module, name, *args)
    weights = zip_checkpoint(tmp_path / "evil.pt", payload)

    with pytest.raises(CheckpointError, match=rf"evil.pt: refused to load {module}\.{name}, which is not"):
        load_model(weights)
    assert not marker.exists()
    pickle.loads(payload)  # control: the payload is live, unpickled without the allow-list it runs
    assert marker.exists()


@pytest.mark.parametrize(
    "payload, reason",
    [
        (call_pickle("builtins", "getattr", print, "__self__"), "refused to load builtins.getattr"),
        (
            call_pickle("numpy.core.multiarray", "_reconstruct", OrderedDict, (0,), b"b"),
            r"refused to rebuild numpy _reconstruct of <class 'collections.OrderedDict'>, which is not numpy",
        ),
        (pickle.dumps(np.array([None, 1], dtype=object), protocol=2), "refused to rebuild numpy dtype 'O8'"),
        (
            call_pickle("_codecs", "encode", "x", "rot13"),
            "refused to rebuild _codecs.encode with encoding 'rot13' \\(only latin1 text of bytes is read\\)",
        ),
        (call_pickle("numpy", "ndarray", (2,)), r"corrupt checkpoint \(TypeError"),  # a marker, not the class
    ],
    ids=["getattr", "reconstruct-ordereddict", "object-array", "codecs-rot13", "ndarray-call"],
)
def test_allowed_numpy_and_codecs_names_rebuild_numbers_only(tmp_path, payload, reason):
    with pytest.raises(CheckpointError, match=rf"evil.pt: {reason}"):
        load_model(zip_checkpoint(tmp_path / "evil.pt", payload))


@pytest.mark.parametrize(
    "model_class, detect_class, message",
    [
        (
            "SegmentationModel",
            "Segment",
            "a YOLOv5 segmentation checkpoint (models.yolo.SegmentationModel); ",
        ),
        (
            "ClassificationModel",
            "Detect",
            "a YOLOv5 classification checkpoint (models.yolo.ClassificationModel); ",
        ),
        ("DetectionModel", "Segment", "a YOLOv5 segmentation checkpoint (models.yolo.Segment); "),
    ],
)
def test_other_yolov5_tasks_are_refused_naming_the_model_type(
    tmp_path, capsys, model_class, detect_class, message
):
    weights = write_checkpoint(
        tmp_path / "other.pt",
        build_model("yolov5n"),
        "v7.0",
        model_class=model_class,
        detect_class=detect_class,
    )
    with pytest.raises(CheckpointError, match="reads detection models only") as error:
        load_model(weights)
    assert str(error.value) == f"{weights}: {message}yolo-transfer reads detection models only " + (
        "(models.yolo.Model / DetectionModel)"
    )
    assert main(["info", str(weights)]) == 2
    assert capsys.readouterr().err == f"error: {error.value}\n"


def test_older_and_newer_model_families_are_refused_with_their_names(tmp_path):
    model = build_model("yolov5n")
    model.yaml = copy.deepcopy(model.yaml)
    model.yaml["backbone"][0] = [-1, 1, "Focus", [64, 3]]  # the stem of v5.0 and earlier
    weights = write_checkpoint(tmp_path / "v5.pt", model, "v6.0")
    with pytest.raises(CheckpointError, match=r"v5.pt: a YOLOv5 v5.0-or-earlier model \(Focus stem\)"):
        load_model(weights)

    payload = call_pickle("ultralytics.nn.tasks", "DetectionModel")
    with pytest.raises(
        CheckpointError, match=r"an Ultralytics YOLOv8-or-later checkpoint \(ultralytics.nn.tasks"
    ):
        load_model(zip_checkpoint(tmp_path / "yolov8n.pt", payload))
    payload = call_pickle("models.common", "C3TR", 64, 64)
    with pytest.raises(
        CheckpointError, match=r"uses models.common.C3TR, a YOLOv5 module yolo-transfer does not"
    ):
        load_model(zip_checkpoint(tmp_path / "transformer.pt", payload))


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
            box, coco_box = slice(anchor * 8, anchor * 8 + 5), slice(anchor * 85, anchor * 85 + 5)
            assert torch.equal(target_conv.weight[box], source_conv.weight[coco_box])  # same anchors: copied

    model, metadata = load_model(official_weights, nc=3)
    assert metadata["names"] == ["0", "1", "2"] and "class rows" not in capsys.readouterr().out
    fresh, _ = load_model(official_weights, names=["widget", "Person", "gadget"], head="fresh")
    assert not torch.equal(fresh.detect.m[0].weight[:5], source.detect.m[0].weight[:5])  # the reference's way
