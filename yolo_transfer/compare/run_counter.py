"""Progress of a comparison: runs finished out of those to run, and the comparison's ETA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from yolo_transfer.engine.run_eta import format_duration


@dataclass
class RunCounter:
    """Counts finished runs; the ETA is the mean time between finishes so far times the runs left (this holds
    for runs in parallel too, since it measures the rate at which runs finish)."""

    total: int
    done: int = 0
    start: float = field(default_factory=time.monotonic)

    def finished(self) -> str:
        """Count one more finished run and say where the comparison stands."""
        self.done += 1
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        return f"{self.done}/{self.total} runs finished, comparison ETA {format_duration(left)}"
