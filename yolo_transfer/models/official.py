"""Read official YOLOv5 ``.pt`` checkpoints (v6.0 - v7.0) without running any pickled code (spec §2).

A ``.pt`` file is a zip holding ``data.pkl`` (a pickle of the whole training dict, including the nn.Module
objects) and one raw file per tensor storage. The pickle is read by :class:`RestrictedUnpickler`: only an
allow-list of names can be looked up, the module classes become inert :class:`PickledObject` records of their
pickled ``__dict__``, tensors are rebuilt from the raw storages, and any other name is refused before anything
is called. The state_dict is then collected from the records the way ``nn.Module.state_dict`` would.

Training checkpoints also hold NumPy values (``best_fitness``) and, under pickle protocol 2, bytes written as
``_codecs.encode(text, "latin1")``. Our own functions rebuild these from their raw bytes (plain numeric dtypes
only, never Python objects); NumPy's own unpickling code never runs.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from yolo_transfer.errors import CheckpointError
from yolo_transfer.option_checks import require_weights_file

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
    "pathlib": {"PosixPath", "WindowsPath"},
}
NUMPY_MULTIARRAY = {"numpy.core.multiarray", "numpy._core.multiarray"}  # NumPy 1 and NumPy 2 spellings
NUMERIC_KINDS = "biuf"  # bool, signed and unsigned integers, floats: the only NumPy values rebuilt
UNSUPPORTED_MODEL_TYPES = {  # names that mark a YOLOv5 model of another task
    "models.yolo.SegmentationModel": "segmentation",
    "models.yolo.Segment": "segmentation",
    "models.common.Proto": "segmentation",
    "models.yolo.ClassificationModel": "classification",
    "models.common.Classify": "classification",
}
LEGACY_BUFFERS = {"anchor_grid"}  # a Detect buffer of files trained before v6.0, derived from the anchors
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


class RefusedValue(Exception):
    """A value in the pickle that the reader will not rebuild; the message says what it was."""


@dataclass(frozen=True)
class NumpyArrayClass:
    """Stands for ``numpy.ndarray`` in the pickle; only :func:`reconstruct_array` accepts it."""


class NumpyDtype:
    """``numpy.dtype(spec, align, copy)`` and its pickled state: a numeric dtype with its byte order."""

    def __init__(self, spec, align=False, copy=False) -> None:
        if not isinstance(spec, str):
            raise RefusedValue(f"numpy.dtype({spec!r})")
        self.dtype = np.dtype(spec)
        if self.dtype.kind not in NUMERIC_KINDS or self.dtype.fields or self.dtype.subdtype:
            raise RefusedValue(f"numpy dtype {spec!r} (only plain numeric NumPy values are read)")

    def __setstate__(self, state) -> None:
        """State (version, byte order, subarray, names, fields, ...): only the byte order is taken."""
        if not isinstance(state, tuple) or len(state) < 5 or any(x is not None for x in state[2:5]):
            raise RefusedValue(f"numpy dtype state {state!r}")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


class NumpyArray:
    """An array rebuilt from its pickled state (version, shape, dtype, Fortran order, raw bytes) as a copy."""

    def __init__(self) -> None:
        self.array = np.empty(0)

    def __setstate__(self, state) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], NumpyDtype)):
            raise RefusedValue("a numpy array whose state is not (version, shape, dtype, order, bytes)")
        _, shape, dtype, fortran, raw = state
        raw = raw.encode("latin1") if isinstance(raw, str) else raw
        if not isinstance(raw, bytes) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise RefusedValue("a numpy array with malformed shape or data")
        if len(raw) != dtype.dtype.itemsize * math.prod(shape):
            raise RefusedValue(f"a numpy array of shape {tuple(shape)} with {len(raw)} bytes of data")
        flat = np.frombuffer(raw, dtype=dtype.dtype)
        self.array = flat.reshape(tuple(shape), order="F" if fortran else "C").copy()


def reconstruct_array(cls, shape, typecode) -> NumpyArray:
    """``numpy.core.multiarray._reconstruct(numpy.ndarray, ...)``: an empty array that BUILD fills."""
    if not isinstance(cls, NumpyArrayClass):
        raise RefusedValue(f"numpy _reconstruct of {cls!r}, which is not numpy.ndarray")
    return NumpyArray()


def numpy_scalar(dtype, raw) -> np.generic:
    """``numpy.core.multiarray.scalar(dtype, bytes)``: one numeric value read from its bytes."""
    raw = raw.encode("latin1") if isinstance(raw, str) else raw
    if not isinstance(dtype, NumpyDtype) or not isinstance(raw, bytes) or len(raw) != dtype.dtype.itemsize:
        raise RefusedValue("a numpy scalar that is not a numeric dtype and its bytes")
    return np.frombuffer(raw, dtype=dtype.dtype)[0]


def latin1_bytes(text, encoding) -> bytes:
    """``_codecs.encode(text, "latin1")``, how pickle protocol 2 writes a bytes object; nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedValue(f"_codecs.encode with encoding {encoding!r} (only latin1 text of bytes is read)")
    return text.encode("latin1")


DATA_BUILDERS = {  # pickled NumPy values and bytes -> our functions that rebuild them
    "_codecs.encode": latin1_bytes,
    "numpy.dtype": NumpyDtype,
    "numpy.ndarray": NumpyArrayClass(),
    **{f"{module}._reconstruct": reconstruct_array for module in NUMPY_MULTIARRAY},
    **{f"{module}.scalar": numpy_scalar for module in NUMPY_MULTIARRAY},
}


def rebuild_tensor(
    storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None
) -> torch.Tensor:
    """The tensor view that ``torch._utils._rebuild_tensor_v2`` describes, over an already loaded storage."""
    if not isinstance(storage, torch.Tensor):
        raise RefusedValue("a tensor that refers to something that is not a storage")
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
        qualified = f"{module}.{name}"
        if qualified == "collections.OrderedDict":
            return OrderedDict
        if module in {"builtins", "__builtin__"} and name == "set":
            return set
        if module == "torch._utils" and name in {"_rebuild_tensor_v2", "_rebuild_parameter"}:
            return rebuild_tensor if name == "_rebuild_tensor_v2" else rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if qualified in DATA_BUILDERS:
            return DATA_BUILDERS[qualified]
        if name in RECORDED_CLASSES.get(module, ()):
            if qualified not in self.record_types:
                self.record_types[qualified] = type(name, (PickledObject,), {"qualified_name": qualified})
            return self.record_types[qualified]
        raise CheckpointError(refusal(self.name, qualified))

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


def refusal(name: str, qualified: str) -> str:
    """Why a checkpoint that names ``qualified`` in its pickle is not read."""
    if qualified in UNSUPPORTED_MODEL_TYPES:
        return (
            f"{name}: a YOLOv5 {UNSUPPORTED_MODEL_TYPES[qualified]} checkpoint ({qualified}); "
            "yolo-transfer reads detection models only (models.yolo.Model / DetectionModel)"
        )
    if qualified.startswith("ultralytics."):
        return (
            f"{name}: an Ultralytics YOLOv8-or-later checkpoint ({qualified}), not a YOLOv5 one; "
            "yolo-transfer reads YOLOv5 v6.0-v7.0 detection checkpoints"
        )
    if qualified.startswith("models."):
        return (
            f"{name}: the model uses {qualified}, a YOLOv5 module yolo-transfer does not build "
            "(supported: Conv, C3, Bottleneck, SPPF, Concat, nn.Upsample, Detect)"
        )
    return (
        f"{name}: refused to load {qualified}, which is not a class a YOLOv5 checkpoint uses "
        "(the file could run code when unpickled)"
    )


@dataclass
class OfficialCheckpoint:
    """What yolo-transfer takes from an official checkpoint."""

    state_dict: dict[str, torch.Tensor]
    config: dict
    names: list[str]
    info: dict = field(default_factory=dict)  # epoch, best_fitness, imgsz (opt), date, model class, dtype


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
    except RefusedValue as err:
        raise CheckpointError(f"{path}: refused to rebuild {err}") from err
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
    """Parameters and persistent buffers of a recorded nn.Module tree, in ``state_dict`` order and naming.

    Detect's ``anchor_grid`` buffer, pickled by code older than v6.0 (the v6.0 release's COCO weights among
    them), is left out: it is the anchors times the strides, which the reference recomputes too.
    """
    state = module.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    if module.qualified_name == "models.yolo.Detect":
        skip |= LEGACY_BUFFERS
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


def as_number(value) -> float | None:
    """``best_fitness`` as stored (a float, a NumPy scalar or a 1-element array) -> float, else None."""
    if isinstance(value, NumpyArray) and value.array.size == 1:
        value = value.array.item()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return None


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """The EMA (else raw) model of an official checkpoint: state_dict, model yaml, class names, info."""
    path = require_weights_file(path)
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
    layers = [*(config.get("backbone") or []), *(config.get("head") or [])]
    if any(isinstance(layer, list) and len(layer) == 4 and layer[2] == "Focus" for layer in layers):
        raise CheckpointError(
            f"{path}: a YOLOv5 v5.0-or-earlier model (Focus stem); yolo-transfer reads v6.0-v7.0 checkpoints"
        )
    nc = int(config.get("nc", model.state.get("nc", 80)))
    opt = ckpt.get("opt") if isinstance(ckpt.get("opt"), dict) else {}
    info = {
        "epoch": ckpt.get("epoch"),
        "best_fitness": as_number(ckpt.get("best_fitness")),
        "date": ckpt.get("date"),
        "imgsz": opt.get("imgsz"),
        "model_class": model.qualified_name,
    }
    state_dict = {k: v.clone() for k, v in collect_state_dict(model).items()}
    half = all(t.dtype == torch.float16 for t in state_dict.values() if t.is_floating_point())
    info["dtype"] = "float16" if half else "float32"
    return OfficialCheckpoint(state_dict, dict(config), names_as_list(model.state.get("names"), nc), info)
