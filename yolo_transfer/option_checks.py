"""The ranges of the numeric command-line options, and a memory estimate, checked before a command starts.

Every float option must be finite; each option has the range below. ``--imgsz`` also has an upper bound and,
with ``--batch``, a lower bound on the memory the command needs: a size that cannot fit on the device is
refused before anything is allocated. ``--hyp`` files are read and checked here too. The files a command reads
(weights, a dataset, image sources) are checked for existence by the ``require_*`` functions, which import
nothing heavy: the command line calls them before torch is imported (from a cold disk that takes a minute).
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

from yolo_transfer.errors import CheckpointError, ConfigError, DataError

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")
MAX_IMGSZ = 8192
UINT32_MAX = 2**32 - 1  # numpy seeds
# option: (lowest, highest, lowest excluded, highest excluded); None = unbounded
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "imgsz": (32, MAX_IMGSZ, False, False),
    "batch": (1, None, False, False),
    "epochs": (1, None, False, False),
    "patience": (0, None, False, False),
    "workers": (0, 256, False, False),
    "val_every": (1, None, False, False),
    "seed": (0, UINT32_MAX, False, False),
    "split_seed": (0, UINT32_MAX, False, False),
    "val_fraction": (0, 1, True, True),
    "lr0": (0, 1, True, False),
    "l2sp": (0, None, False, False),
    "close_mosaic": (0, None, False, False),
    "max_seconds": (0, None, True, False),
    "max_images": (1, None, False, False),
    "jobs": (1, None, False, False),
    "conf": (0, 1, False, False),
    "iou": (0, 1, False, False),
    "max_det": (1, None, False, False),
    "target_map": (0, 1, False, False),
    "nc": (1, None, False, False),
}
# Lower bounds on the memory per input pixel (yolov5n, the smallest model): training keeps ~206 bytes of
# activations per pixel for the backward pass in half precision (412 in fp32); a forward pass needs ~32.
TRAIN_BYTES_PER_PIXEL = 200
INFERENCE_BYTES_PER_PIXEL = 32
TRAINING_COMMANDS = ("train", "compare", "advise")


def check_options(args: argparse.Namespace) -> None:
    """ConfigError naming the first option out of its range (nothing imported: the first check made)."""
    for name, (low, high, low_open, high_open) in RANGES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            raise ConfigError(
                f"{flag} must be {_describe_range(low, high, low_open, high_open)}, got {value:g}"
            )
    for seed in str(getattr(args, "seeds", "") or "").split(","):  # compare --seeds; the format: parse_seeds
        if seed.strip().lstrip("-").isdigit() and not 0 <= int(seed) <= UINT32_MAX:
            raise ConfigError(f"--seeds must be integers in [0, {UINT32_MAX}], got {seed.strip()}")


def check_settings(args: argparse.Namespace) -> None:
    """ConfigError for a ``--hyp`` file that is not usable, or an image size that cannot fit in memory (these
    checks import torch: the command line makes them after the files are found)."""
    if getattr(args, "hyp", None) is not None and not getattr(args, "resume", None):
        from yolo_transfer.data.hyps import load_hyp

        load_hyp(args.hyp)
    if getattr(args, "imgsz", None) is not None and not getattr(args, "resume", None):
        check_memory(args)


def check_memory(args: argparse.Namespace) -> None:
    """ConfigError when ``--imgsz`` and ``--batch`` need more memory than the device has (a lower bound)."""
    training = args.command in TRAINING_COMMANDS
    batch = getattr(args, "batch", None) or 1
    needed = batch * args.imgsz**2 * (TRAIN_BYTES_PER_PIXEL if training else INFERENCE_BYTES_PER_PIXEL)
    where, available = device_memory(getattr(args, "device", None) or "cpu")
    if needed > available:
        work = "training" if training else "inference"
        raise ConfigError(
            f"--imgsz {args.imgsz} with batch {batch}: {work} needs at least {needed / 2**30:.0f} GiB, more "
            f"than the {available / 2**30:.0f} GiB of {where}; lower --imgsz or --batch"
        )


def device_memory(device_name: str) -> tuple[str, int]:
    """(description, bytes) of the memory a command on ``device_name`` computes in: GPU memory, else RAM."""
    from yolo_transfer.engine.device import select_device

    device = select_device(device_name)
    if device.type == "cuda":
        import torch

        return str(device), torch.cuda.get_device_properties(device).total_memory
    return "this machine's memory", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _describe_range(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def require_weights_file(path: str | Path) -> Path:
    """``path`` when it is a file; else CheckpointError "PATH: no such weights file"."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    return path


def require_dataset(source: str | Path) -> Path:
    """``source`` (``~`` expanded) when it exists; else DataError "PATH: dataset not found"."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"{path}: dataset not found")
    return path


def require_any_source(sources: Sequence[str | Path]) -> None:
    """DataError "A, B: no such file or folder" when none of the image files or folders ``sources`` exists."""
    missing = [Path(source) for source in sources if not Path(source).exists()]
    if missing and len(missing) == len(sources):
        raise DataError(f"{listed(missing)}: no such file or folder")


def listed(paths: Sequence) -> str:
    """The first three paths, and how many more."""
    shown = ", ".join(map(str, paths[:3]))
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
