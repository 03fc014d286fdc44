"""Write checkpoints the way yolov5's train.py (v6.0, v6.1, v6.2, v7.0) writes them, without yolov5's code.

Our modules are re-created as instances of stub classes that pickle under the reference's names
(``models.yolo.Model`` / ``DetectionModel``, ``models.yolo.Detect``, ``models.common.Conv``, ...) and carry
the reference's attributes (spec §2.2): the model's ``yaml``, ``names`` (a list before v7.0, a dict in v7.0),
``stride``, ``hyp``, ``class_weights``; Detect's ``grid``/``anchor_grid`` lists and plain ``stride`` tensor;
each layer's ``i``, ``f``, ``type``, ``np``. The training dict has the keys of that version's train.py
(spec §2.1), with ``best_fitness`` as NumPy data, which pickle protocol 2 writes through ``_codecs.encode``.
The stub classes live in ``sys.modules`` only while ``torch.save`` runs.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from yolo_transfer.models import DetectionModel
from yolo_transfer.models.common import C3, SPPF, Bottleneck, Concat, Conv
from yolo_transfer.models.yolo import Detect

VERSIONS = ("v6.0", "v6.1", "v6.2", "v7.0")
KEYS = {  # the keys of the dict train.py saves (spec §2.1)
    "v6.0": ("epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id"),
    "v6.1": ("epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id", "date"),
    "v6.2": ("epoch", "best_fitness", "model", "ema", "updates", "optimizer", "wandb_id", "opt", "date"),
    "v7.0": ("epoch", "best_fitness", "model", "ema", "updates", "optimizer", "opt", "git", "date"),
}
STRIPPED = {  # keys strip_optimizer sets to None; v6.0 keeps best_fitness (NumPy data in released files)
    "v6.0": ("optimizer", "training_results", "wandb_id", "ema", "updates"),
    **{version: ("optimizer", "best_fitness", "wandb_id", "ema", "updates") for version in VERSIONS[1:]},
}
COMMON = (Conv, C3, Bottleneck, SPPF, Concat)
NUMPY2_MULTIARRAY, NUMPY1_MULTIARRAY = b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"


@contextlib.contextmanager
def reference_classes(model_class: str, detect_class: str = "Detect"):
    """Stub classes under the reference's module paths, importable (for pickle) inside the block."""
    paths = {
        DetectionModel: ("models.yolo", model_class),
        Detect: ("models.yolo", detect_class),
        **{cls: ("models.common", cls.__name__) for cls in COMMON},
    }
    modules = {name: types.ModuleType(name) for name in ("models", "models.yolo", "models.common")}
    stubs = {}
    for ours, (module_name, class_name) in paths.items():
        stubs[ours] = type(class_name, (nn.Module,), {"__module__": module_name, "__qualname__": class_name})
        setattr(modules[module_name], class_name, stubs[ours])
    previous = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield stubs
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def as_reference(module: nn.Module, stubs: dict, version: str, shared_act: nn.Module) -> nn.Module:
    """A copy of ``module`` whose yolo-transfer classes are stubs with the reference's attributes."""
    children = OrderedDict(
        (name, as_reference(child, stubs, version, shared_act)) for name, child in module._modules.items()
    )
    if type(module) not in stubs:  # torch.nn modules pickle as themselves
        plain = copy.copy(module)
        plain.__dict__["_modules"] = children
        return plain
    stub = stubs[type(module)].__new__(stubs[type(module)])
    stub.__dict__.update(module.__dict__)
    stub.__dict__.update(
        _modules=children,
        _parameters=OrderedDict(module._parameters),
        _buffers=OrderedDict(module._buffers),
        _non_persistent_buffers_set=set(module._non_persistent_buffers_set),
    )
    if hasattr(module, "i"):  # a top-level layer: type as the reference's class path
        stub.type = f"{type(stub).__module__}.{type(stub).__qualname__}"
    if isinstance(module, Conv) and version == "v7.0":
        stub._modules["act"] = shared_act  # v7.0: one class-level SiLU shared by every Conv
    if isinstance(module, (Detect, DetectionModel)):  # stride: a plain tensor attribute, not a buffer
        stub._buffers.pop("stride")
        stub._non_persistent_buffers_set.discard("stride")
        stub.__dict__["stride"] = module.stride.clone()
    if isinstance(module, Detect):
        stub.__dict__.update(
            grid=[torch.zeros(1, module.na, 8, 8, 2).half() for _ in range(module.nl)],  # cached by val
            anchor_grid=[torch.ones(1, module.na, 8, 8, 2).half() for _ in range(module.nl)],
            inplace=True,
        )
        if version == "v7.0":
            stub.dynamic = False
        else:
            stub.onnx_dynamic = False
    return stub


def with_legacy_anchor_grid(detect_stub: nn.Module) -> None:
    """Detect as pickled by pre-v6.0 code: ``anchor_grid`` a registered buffer, anchors x stride in pixels."""
    anchors = detect_stub._buffers["anchors"]
    pixels = anchors.float() * detect_stub.stride.float().view(-1, 1, 1)
    detect_stub._buffers["anchor_grid"] = pixels.view(anchors.shape[0], 1, -1, 1, 1, 2).to(anchors.dtype)
    detect_stub.__dict__.pop("anchor_grid")


def reference_model(model: DetectionModel, stubs: dict, version: str, legacy_anchor_grid: bool) -> nn.Module:
    """The pickled form of ``model`` (fp16, as train.py saves it) with the attributes train.py sets."""
    stub = as_reference(copy.deepcopy(model).half(), stubs, version, nn.SiLU(inplace=True))
    names = list(model.names)
    stub.__dict__.update(
        names=dict(enumerate(names)) if version == "v7.0" else names,
        nc=model.nc,
        stride=model.stride.float().clone(),  # fp32 on the model, fp16 on Detect (BaseModel._apply)
        hyp={"lr0": 0.01, "box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0, "label_smoothing": 0.0},
        class_weights=torch.ones(model.nc),
        inplace=True,
    )
    if version != "v7.0":
        stub.gr = 1.0
    if legacy_anchor_grid:
        with_legacy_anchor_grid(stub.model[-1])
    return stub


def optimizer_state(model: DetectionModel) -> dict:
    """An SGD state_dict shaped like the reference's three parameter groups, with momentum buffers."""
    params = list(model.parameters())
    groups = [
        {
            "lr": 0.01,
            "momentum": 0.937,
            "dampening": 0,
            "weight_decay": wd,
            "nesterov": True,
            "initial_lr": 0.01,
        }
        for wd in (0.0, 0.0005, 0.0)
    ]
    for index, group in enumerate(groups):
        group["params"] = list(range(index, len(params), 3))
    state = {i: {"momentum_buffer": torch.zeros_like(p)} for i, p in enumerate(params[:6])}
    return {"state": state, "param_groups": groups}


def write_checkpoint(
    path: Path,
    model: DetectionModel,
    version: str,
    *,
    stripped: bool = True,
    best_fitness=None,
    numpy1: bool = True,
    legacy_anchor_grid: bool = False,
    model_class: str | None = None,
    detect_class: str = "Detect",
    raw_model: DetectionModel | None = None,
    imgsz: int = 640,
) -> Path:
    """Write ``model`` to ``path`` as yolov5 ``version``'s train.py does (``stripped``: as a released file).

    ``raw_model`` is the non-EMA training model saved under ``model`` next to ``ema`` (unstripped files).
    ``numpy1`` writes NumPy values under NumPy 1's module names (``numpy.core.multiarray``), as the files
    trained with the reference have them; otherwise under NumPy 2's (``numpy._core.multiarray``).
    """
    if best_fitness is None:
        best_fitness = np.array([0.4321])  # fitness() returns a (1,) array (spec §2.1)
    default_class = "DetectionModel" if version in ("v6.2", "v7.0") else "Model"
    with reference_classes(model_class or default_class, detect_class) as stubs:
        ema = reference_model(model, stubs, version, legacy_anchor_grid)
        raw = reference_model(raw_model or model, stubs, version, legacy_anchor_grid)
        values = {
            "epoch": 2,
            "best_fitness": best_fitness,
            "model": raw,
            "ema": ema,
            "updates": 120,
            "optimizer": optimizer_state(model),
            "wandb_id": None,
            "opt": {
                "weights": "yolov5n.pt",
                "data": "data.yaml",
                "epochs": 3,
                "batch_size": 16,
                "imgsz": imgsz,
                "hyp": {"lr0": 0.01, "momentum": 0.937},
                "save_dir": "runs/train/exp",
            },
            "git": {
                "remote": "https://github.com/ultralytics/yolov5",
                "branch": "master",
                "commit": "915bbf2",
            },
            "date": "2022-11-22T10:17:08.123456",
        }
        ckpt = {key: values[key] for key in KEYS[version]}
        if stripped:  # strip_optimizer: the EMA becomes 'model'
            ckpt.update(model=ema, epoch=-1, **dict.fromkeys(STRIPPED[version]))
        torch.save(ckpt, path)
    if numpy1:
        rename_in_pickle(path, NUMPY2_MULTIARRAY, NUMPY1_MULTIARRAY)
    return path


def rename_in_pickle(path: Path, old: bytes, new: bytes) -> None:
    """Replace a module name in the checkpoint's data.pkl (protocol 2 spells globals as text lines)."""
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info) for info in archive.infolist()}
    for name in entries:
        if name.endswith("data.pkl"):
            entries[name] = entries[name].replace(old, new)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def pickle_bytes(path: Path) -> bytes:
    """The data.pkl of a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
