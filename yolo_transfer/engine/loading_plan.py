"""How a run feeds its model on this host: loader workers, torch threads, and the decoded-image RAM cache.

On a CPU-only host the loader workers and torch's compute threads share the same cores, so few cores mean few
workers (none below four: the cached images load between steps for less than a worker takes from the steps),
and torch keeps a thread per core all the same: a worker sleeps most of a step, and taking a core from torch
for it cost a third of the training speed (2 cores, license_plates at 320 px, batch 16: with the RAM cache
20-22 img/s with one worker and one thread, 30-31 with one worker and two threads, 34-35 with no worker and
two; without it 19 with one thread and 27-28 with two, beside one or two workers, 27-29 with no worker and two
threads). With a GPU the host only prepares data and workers take every core but one. Decoding and resizing
every image again each epoch is the costliest part of loading, so the decoded images are kept in RAM whenever
they fit a budget (a quarter of the available memory, at most ``CACHE_CAP_BYTES``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from yolo_transfer.data.validate import Sample

CACHE_CAP_BYTES = 8 * 2**30
CACHE_MEMORY_SHARE = 0.25
MAX_WORKERS = 8


@dataclass(frozen=True)
class LoadingPlan:
    """The chosen settings and why; :meth:`line` is what the trainer prints at the start."""

    workers: int
    threads: int
    cores: int
    cache: bool
    cache_bytes: int
    budget_bytes: int
    cache_reason: str

    def line(self) -> str:
        cache = "on" if self.cache else "off"
        return (
            f"loading: {self.workers} loader workers, {self.threads} torch threads ({self.cores} cores); "
            f"RAM image cache {cache} ({self.cache_reason}: {_mb(self.cache_bytes)} decoded, "
            f"budget {_mb(self.budget_bytes)})"
        )


def plan_loading(
    samples: list[Sample],
    imgsz: int,
    device: torch.device,
    workers: int | None,
    cache: bool | None,
    processes: int = 1,
) -> LoadingPlan:
    """Settings for ``samples`` (train and val) at ``imgsz``; ``workers``/``cache`` None choose automatically.

    ``processes``: training processes sharing this host (multi-GPU runs), each gets its share of the cores.
    The torch thread count is never raised above what torch (or its caller, e.g. ``compare --jobs``) set.
    """
    cores = max(available_cores() // processes, 1)
    chosen_workers = auto_workers(cores, device) if workers is None else workers
    threads = max(1, min(torch.get_num_threads(), cores))
    size, budget = cache_bytes(samples, imgsz), cache_budget_bytes()
    if cache is None:
        use, reason = size <= budget, "auto, fits" if size <= budget else "auto, too large"
    else:
        use, reason = cache, "--cache" if cache else "--no-cache"
    return LoadingPlan(chosen_workers, threads, cores, use, size, budget, reason)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch threads, then restore the count (it is process-wide)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers restrict), else the CPU count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(cores: int, device: torch.device) -> int:
    """Loader workers: with an accelerator every core but one; on the CPU a quarter of the cores (< 4: 0)."""
    if device.type == "cpu":
        return min(MAX_WORKERS, cores // 4)
    return min(MAX_WORKERS, max(cores - 1, 0))


def cache_bytes(samples: list[Sample], imgsz: int) -> int:
    """Bytes of the decoded BGR images, each resized so its long side is ``imgsz`` (as the dataset caches)."""
    total = 0
    for sample in samples:
        ratio = imgsz / max(sample.width, sample.height)
        total += max(int(sample.width * ratio), 1) * max(int(sample.height * ratio), 1) * 3
    return total


def cache_budget_bytes() -> int:
    """A quarter of the memory available now, at most ``CACHE_CAP_BYTES``."""
    return int(min(available_memory_bytes() * CACHE_MEMORY_SHARE, CACHE_CAP_BYTES))


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the free physical pages."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MB"
