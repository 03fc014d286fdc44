"""The compute budget of a run or a comparison: ``epochs=N``, ``time=MIN`` or ``images=K``.

The trainer needs an epoch count for its LR schedule in every case. For ``epochs`` it is the budget itself;
for ``images`` it is ``ceil(K / train images)`` and the trainer stops after exactly K images
(``max_images``). For ``time`` the schedule gets the most epochs whose estimated seconds (engine/cost.py) fill
90% of the budget, so the LR decays to its end before the time runs out. When the last phase's epochs run
slower than that (a busier or slower machine than the one measured), the trainer shortens the phase to what
still fits (:func:`time_fitted_length`); ``max_seconds`` stops the run if even that was short.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from yolo_transfer.errors import ConfigError
from yolo_transfer.strategies import Strategy

BUDGET_PATTERN = re.compile(r"^\s*(epochs|time|images)\s*=\s*([0-9]*\.?[0-9]+)\s*$")
MOST_EPOCHS = 1000  # the longest schedule a time budget is searched for


@dataclass(frozen=True)
class Budget:
    """One budget for all runs; ``value`` is epochs, minutes or images."""

    kind: str
    value: float

    @property
    def max_seconds(self) -> float | None:
        return self.value * 60.0 if self.kind == "time" else None

    @property
    def max_images(self) -> int | None:
        return int(self.value) if self.kind == "images" else None

    def describe(self) -> str:
        unit = {"epochs": "epochs", "time": "minutes", "images": "training images"}[self.kind]
        return f"{self.value:g} {unit}"

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


def parse_budget(text: str) -> Budget:
    """Parse ``epochs=N``, ``time=MIN`` (minutes, may be fractional) or ``images=K``."""
    match = BUDGET_PATTERN.match(text)
    if not match:
        raise ConfigError(f"--budget {text!r}: expected epochs=N, time=MIN or images=K")
    kind, value = match.group(1), float(match.group(2))
    if value <= 0 or (kind != "time" and value != int(value)) or not math.isfinite(value):
        raise ConfigError(
            f"--budget {text!r}: {kind} must be a positive {'number' if kind == 'time' else 'integer'}"
        )
    return Budget(kind, value)


def epochs_for_images(budget: Budget, n_train: int) -> int:
    """Epochs whose schedule ends when ``budget.max_images`` training images have been seen."""
    return max(1, math.ceil(budget.value / max(n_train, 1)))


def schedule_seconds(strategy: Strategy, phase_epoch_s: list[float], epochs: int) -> float:
    """Seconds of ``strategy`` resolved for ``epochs`` (plateau phases counted at their longest)."""
    total, used = 0.0, 0
    for phase, seconds in zip(strategy.phases, phase_epoch_s, strict=True):
        length = phase.epochs or (phase.plateau or {}).get("max_epochs") or max(epochs - used, 0)
        total += length * seconds
        used += length
    return total


def epochs_within(
    resolve: Callable[[int], Strategy], phase_epoch_s: list[float], budget_s: float, most: int = MOST_EPOCHS
) -> int:
    """The largest epoch count whose schedule (``resolve(epochs)``, the strategy with its phase lengths for
    that budget) fits in ``budget_s`` seconds; 0 when not even one epoch per phase does."""
    low, high = len(phase_epoch_s) - 1, most  # a schedule needs at least one epoch per phase
    while low < high:
        mid = (low + high + 1) // 2
        if schedule_seconds(resolve(mid), phase_epoch_s, mid) <= budget_s:
            low = mid
        else:
            high = mid - 1
    return low if low >= len(phase_epoch_s) else 0


def time_fitted_length(
    planned: int, epoch_seconds: Sequence[float], seconds_left: float
) -> tuple[int, float] | None:
    """The length of a phase planned for ``planned`` epochs that has run ``epoch_seconds`` (wall time of each
    epoch, validation and checkpoints included) with ``seconds_left`` of a time budget: the epochs that fit at
    its pace, never more than planned, and that pace (seconds per epoch). The pace is the larger of the mean
    epoch (the phase's first left out: it carries the set-up, image cache and loaders) and the latest one, so
    a slowdown counts from its first epoch; the next re-plan gives back what a passing one took. None before
    two epochs have run and when not even one more fits (the budget then stops the run)."""
    if len(epoch_seconds) < 2:
        return None
    pace = max(statistics.fmean(epoch_seconds[1:]), epoch_seconds[-1])
    more = math.floor(seconds_left / pace)
    if more < 1:
        return None
    return min(planned, len(epoch_seconds) + more), pace
