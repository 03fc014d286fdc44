"""Where a training epoch's time goes: data wait, forward, loss, backward, optimizer step, EMA, validation.

Sections are timed with the wall clock. On CUDA the kernels run asynchronously, so a section's time is only
its own when the device is synchronised at its end (``sync=True``, which costs a little speed); without it
the device time shows up wherever the host next waits for the device.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

SECTIONS = ("data", "forward", "loss", "backward", "optimizer", "ema", "validation")


class StepTimer:
    """Seconds per section, for the current epoch and for the whole run."""

    def __init__(self, device: torch.device, sync: bool = False) -> None:
        self.sync = sync and device.type == "cuda"
        self.device = device
        self.epoch = dict.fromkeys(SECTIONS, 0.0)
        self.total = dict.fromkeys(SECTIONS, 0.0)

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.sync:
                torch.cuda.synchronize(self.device)
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.epoch[name] += seconds
        self.total[name] += seconds

    def new_epoch(self) -> None:
        self.epoch = dict.fromkeys(SECTIONS, 0.0)

    def data_share(self, train_seconds: float) -> float:
        """The fraction of this epoch's training time spent waiting for batches."""
        return self.epoch["data"] / train_seconds if train_seconds > 0 else 0.0
