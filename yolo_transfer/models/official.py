"""Read official YOLOv5 ``.pt`` checkpoints (v6.0 - v7.0) without running any pickled code (spec §2).

A ``.pt`` file is a zip holding ``data.pkl`` (a pickle of the whole training dict, including the nn.Module
objects) and one raw file per tensor storage. The pickle is read by :class:`RestrictedUnpickler`: only an
allow-list of names can be looked up, the module classes become inert :class:`PickledObject` records of their
pickled ``__dict__``, tensors are rebuilt from the raw storages, and any other name is refused before anything
is called. The state_dict is then collected from the records the way ``nn.Module.state_dict`` would.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from yolo_transfer.errors import CheckpointError

MODEL_CLASSES = {"models.yolo.Model", "models.yolo.DetectionModel"}
RECORDED_CLASSES = {  # become PickledObject records
    "models.yolo": {"Model", "DetectionModel", "Detect"},
    "models.common": {"Conv", "C3", "Bottleneck", "SPPF", "SPP", "Concat", "Focus", "BottleneckCSP"},
    "torch.nn.modules.container": {"Sequential", "ModuleList"},
    "torch.nn.modules.conv": {"Conv2d"},
    "torch.nn.modules.batchnorm": {"BatchNorm2d"},
    "torch.nn.modules.activation": {
        "SiLU",
        "ReLU",
        "ReLU6",
        "LeakyReLU",
        "Hardswish",
        "Mish",
        "GELU",
        "Sigmoid",
    },
    "torch.nn.modules.linear": {"Identity"},
    "torch.nn.modules.pooling": {"MaxPool2d"},
    "torch.nn.modules.upsampling": {"Upsample"},
    "numpy": {"ndarray", "dtype"},  # best_fitness of unstripped checkpoints
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "pathlib": {"PosixPath", "WindowsPath"},
}
STORAGE_DTYPES = {
    "HalfStorage": torch.float16,
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class PickledObject:
    """Inert stand-in for an allow-listed class: it keeps the pickled arguments and state and runs nothing."""

    qualified_name = ""

    def __init__(self, *args) -> None:
        self.args = args
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        self.state = state if isinstance(state, dict) else {}


@dataclass(frozen=True)
class StorageType:
    dtype: torch.dtype


def rebuild_tensor(
    storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None
) -> torch.Tensor:
    """The tensor view that ``torch._utils._rebuild_tensor_v2`` describes, over an already loaded storage."""
    if not isinstance(storage, torch.Tensor):
        raise CheckpointError("a tensor refers to something that is not a storage")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def rebuild_parameter(data, requires_grad=False, hooks=None) -> torch.Tensor:
    """``torch._utils._rebuild_parameter``: parameters are read as plain tensors."""
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch zip checkpoint, resolving only allow-listed names (see the module docstring)."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, name: str) -> None:
        super().__init__(archive.open(f"{prefix}data.pkl"))
        self.archive, self.prefix, self.name = archive, prefix, name
        self.storages: dict[str, torch.Tensor] = {}
        self.record_types: dict[str, type[PickledObject]] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module in {"builtins", "__builtin__"} and name == "set":
            return set
        if module == "torch._utils" and name in {"_rebuild_tensor_v2", "_rebuild_parameter"}:
            return rebuild_tensor if name == "_rebuild_tensor_v2" else rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if name in RECORDED_CLASSES.get(module, ()):
            qualified = f"{module}.{name}"
            if qualified not in self.record_types:
                self.record_types[qualified] = type(name, (PickledObject,), {"qualified_name": qualified})
            return self.record_types[qualified]
        raise CheckpointError(
            f"{self.name}: refused to load {module}.{name}, which is not a class a YOLOv5 checkpoint uses "
            "(the file could run code when unpickled)"
        )

    def persistent_load(self, pid) -> torch.Tensor:
        if not (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], StorageType)
        ):
            raise CheckpointError(f"{self.name}: unexpected persistent id in the pickle")
        _, storage_type, key, _location, numel = pid
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            dtype = storage_type.dtype
            storage = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if storage.numel() != numel:
                raise CheckpointError(
                    f"{self.name}: storage {key} holds {storage.numel()} values, expected {numel}"
                )
            self.storages[key] = storage
        return self.storages[key]


@dataclass
class OfficialCheckpoint:
    """What yolo-transfer takes from an official checkpoint."""

    state_dict: dict[str, torch.Tensor]
    config: dict
    names: list[str]
    info: dict = field(default_factory=dict)  # epoch, imgsz (from opt), date, model class, dtype


def unpickle_checkpoint(path: Path) -> object:
    """The object pickled in a torch zip checkpoint, with module classes as PickledObject records."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a zip-format PyTorch checkpoint (legacy or corrupt file)")
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if len(pickles) != 1:
                raise CheckpointError(
                    f"{path}: expected one data.pkl in the checkpoint, found {len(pickles)}"
                )
            prefix = pickles[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
            return RestrictedUnpickler(archive, prefix, str(path)).load()
    except CheckpointError:
        raise
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        KeyError,
        EOFError,
        TypeError,
        ValueError,
        RuntimeError,
        AttributeError,
        IndexError,
    ) as err:
        raise CheckpointError(f"{path}: corrupt checkpoint ({err.__class__.__name__}: {err})") from err


def collect_state_dict(module: PickledObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a recorded nn.Module tree, in ``state_dict`` order and naming."""
    state = module.state
    skip = state.get("_non_persistent_buffers_set") or set()
    tensors = {f"{prefix}{k}": v for k, v in (state.get("_parameters") or {}).items() if v is not None}
    tensors |= {
        f"{prefix}{k}": v for k, v in (state.get("_buffers") or {}).items() if v is not None and k not in skip
    }
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            tensors |= collect_state_dict(child, f"{prefix}{name}.")
    return tensors


def names_as_list(names, nc: int) -> list[str]:
    """Class names stored as a list or an {index: name} dict -> a list of nc strings."""
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    if not isinstance(names, (list, tuple)) or len(names) != nc:
        return [str(i) for i in range(nc)]
    return [str(n) for n in names]


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """The EMA (else raw) model of an official checkpoint: state_dict, model yaml, class names, info."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    ckpt = unpickle_checkpoint(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a YOLOv5 checkpoint (the pickle holds no dict)")
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, PickledObject) or model.qualified_name not in MODEL_CLASSES:
        raise CheckpointError(
            f"{path}: not a YOLOv5 detection checkpoint (no models.yolo model under 'ema'/'model')"
        )
    config = model.state.get("yaml")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: the model carries no yaml config")
    nc = int(config.get("nc", model.state.get("nc", 80)))
    opt = ckpt.get("opt") if isinstance(ckpt.get("opt"), dict) else {}
    info = {
        "epoch": ckpt.get("epoch"),
        "date": ckpt.get("date"),
        "imgsz": opt.get("imgsz"),
        "model_class": model.qualified_name,
    }
    state_dict = {k: v.clone() for k, v in collect_state_dict(model).items()}
    half = all(t.dtype == torch.float16 for t in state_dict.values() if t.is_floating_point())
    info["dtype"] = "float16" if half else "float32"
    return OfficialCheckpoint(state_dict, dict(config), names_as_list(model.state.get("names"), nc), info)
