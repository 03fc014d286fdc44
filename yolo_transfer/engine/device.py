"""Device selection (yolov5's spellings, the first GPU by default), its description, and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from yolo_transfer.errors import ConfigError

AUTO = "auto"
DEVICE_HELP = "auto (first CUDA GPU, else Apple MPS, else CPU), cpu, mps, cuda, cuda:N, or GPU index N"


def select_device(name: str = AUTO) -> torch.device:
    """The torch device for a ``--device`` value, as yolov5's ``select_device``.

    ``auto`` or ``""``: the first CUDA device when one is available, then MPS, else the CPU. ``cpu``, ``mps``,
    ``cuda`` (= ``cuda:0``), ``cuda:N`` and a GPU index ``N`` name one device; a list ``0,1`` selects its
    first GPU (one process trains on one device). ConfigError when the name is unknown or the device absent.
    """
    text = str(name).strip().lower().replace(" ", "")
    if text in ("", AUTO):
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text in ("cpu", "mps"):
        if text == "mps" and not _mps_available():
            raise ConfigError("--device mps: Apple MPS is not available on this machine")
        return torch.device(text)
    index = _cuda_index(text)
    if index is None:
        raise ConfigError(f"--device {name!r}: use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s), 0..{count - 1}")
    return torch.device("cuda", index)


def _cuda_index(text: str) -> int | None:
    """The first GPU index of ``cuda``, ``cuda:N``, ``N`` or ``N,M,...``; None for anything else."""
    if text == "cuda":
        return 0
    text = text.removeprefix("cuda:")
    parts = text.split(",")
    if all(part.isdigit() for part in parts):
        return int(parts[0])
    return None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_info(device: torch.device) -> dict:
    """What summary.json records: ``device``, ``name``, and ``memory_gib`` (CUDA) or ``threads`` (CPU)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return {"device": str(device), "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
    if device.type == "mps":
        return {"device": "mps", "name": "Apple MPS"}
    return {"device": "cpu", "name": "CPU", "threads": torch.get_num_threads()}


def describe_device(device: torch.device) -> str:
    """One line such as ``cuda:0 (NVIDIA H200, 139.8 GiB)`` or ``cpu (CPU, 8 threads)``."""
    info = device_info(device)
    extra = f", {info['memory_gib']} GiB" if "memory_gib" in info else ""
    extra += f", {info['threads']} threads" if "threads" in info else ""
    return f"{info['device']} ({info['name']}{extra})"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch. On CPU, equal seeds and worker counts then give bit-identical runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_memory_format(device: torch.device) -> torch.memory_format:
    """NHWC activations: the layout oneDNN (CPU) and cuDNN/tensor cores (CUDA) convolve fastest."""
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


def training_input(
    images: torch.Tensor, device: torch.device, memory_format: torch.memory_format
) -> torch.Tensor:
    """A uint8 image batch as the model's float input in [0, 1], on ``device`` in ``memory_format``.

    The layout changes while the batch is still uint8, a quarter of the float copy it would otherwise take
    (none at all for the loader's batches, which come channels_last).
    Pass the result straight to the model: with a frozen first layer nothing then keeps it once the forward
    returns, so loss and backward run without it.
    """
    images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
    return images.float().div_(255)
