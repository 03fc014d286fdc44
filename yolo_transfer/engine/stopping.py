"""Patience on validation fitness: early stopping (spec §5.4) and phase plateaus share one rule."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Plateau:
    """Stops after ``patience`` epochs without fitness >= best + min_delta (ties reset the count, §5.4).

    ``patience`` 0 never stops. The fields are plain numbers so the tracker round-trips through JSON.
    """

    patience: int
    min_delta: float = 0.0
    best: float = float("-inf")
    best_epoch: int = -1

    def update(self, epoch: int, fitness: float) -> bool:
        """Record ``fitness`` of ``epoch``; True when training should stop."""
        if self.best_epoch < 0 or fitness >= self.best + self.min_delta:
            self.best, self.best_epoch = fitness, epoch
        return self.patience > 0 and epoch - self.best_epoch >= self.patience
