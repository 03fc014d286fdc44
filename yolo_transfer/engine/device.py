"""Device selection and seeding for training runs."""

from __future__ import annotations

import random

import numpy as np
import torch

from yolo_transfer.errors import ConfigError


def select_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; ConfigError when the name is unknown or CUDA is absent."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: use cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch. On CPU, equal seeds and worker counts then give bit-identical runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
