"""The compute budget every strategy of a comparison gets: ``epochs=N``, ``time=MIN`` or ``images=K``.

The trainer needs an epoch count for its LR schedule in every case. For ``epochs`` it is the budget itself;
for ``images`` it is ``ceil(K / train images)`` and the trainer stops after exactly K images
(``max_images``). For ``time`` the run first measures itself (:func:`epochs_for_time`): the seconds one
training image costs in each phase of its strategy (forward + backward with that phase's modules frozen),
the seconds the data loader needs per augmented image, and the seconds one validation image costs. One epoch
is estimated as ``train images x per-image cost (phases weighted by their share of the schedule) + val
images x val cost``, and the schedule gets ``floor(seconds / epoch estimate)`` epochs (at least 1), so the
LR decays to its end just as the time runs out; ``max_seconds`` stops the run if the estimate was short.
Each run measures itself on its own device and under its own load (parallel runs slow each other down).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import torch

from yolo_transfer.errors import ConfigError

BUDGET_PATTERN = re.compile(r"^\s*(epochs|time|images)\s*=\s*([0-9]*\.?[0-9]+)\s*$")
NOMINAL_EPOCHS = 100  # phase fractions are resolved against this many epochs to weigh their costs


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


def parse_budget(text: str) -> Budget:
    """Parse ``epochs=N``, ``time=MIN`` (minutes, may be fractional) or ``images=K``."""
    match = BUDGET_PATTERN.match(text)
    if not match:
        raise ConfigError(f"--budget {text!r}: expected epochs=N, time=MIN or images=K")
    kind, value = match.group(1), float(match.group(2))
    if value <= 0 or (kind != "time" and value != int(value)):
        raise ConfigError(
            f"--budget {text!r}: {kind} must be a positive {'number' if kind == 'time' else 'integer'}"
        )
    return Budget(kind, value)


def epochs_for_images(budget: Budget, n_train: int) -> int:
    """Epochs whose schedule ends when ``budget.max_images`` training images have been seen."""
    return max(1, math.ceil(budget.value / max(n_train, 1)))


def epochs_for_time(
    weights: str,
    strategy_name: str,
    data: str,
    *,
    seconds: float,
    imgsz: int,
    batch: int,
    hyp: str | dict,
    device: str,
    val_fraction: float,
    seed: int,
    probe_steps: int = 2,
) -> tuple[int, dict]:
    """Epochs that fill ``seconds`` for this strategy on this machine, and the measurements behind them."""
    from yolo_transfer.data import build_dataloader, load_dataset, load_hyp
    from yolo_transfer.models import load_model
    from yolo_transfer.strategies import load_strategy
    from yolo_transfer.strategies.trainable import resolve_modules

    spec = load_dataset(data, val_fraction=val_fraction, seed=seed)
    model, _ = load_model(weights, nc=len(spec.names), names=spec.names)
    model.to(device)
    probe_batch = max(1, min(batch, 8))
    images = torch.rand(probe_batch, 3, imgsz, imgsz, device=device)

    strategy = load_strategy(strategy_name, epochs=NOMINAL_EPOCHS)
    shares, costs = [], []
    remaining = NOMINAL_EPOCHS
    for phase in strategy.phases:
        length = phase.epochs or (phase.plateau or {}).get("max_epochs") or remaining
        shares.append(max(min(length, remaining), 0))
        remaining -= shares[-1]
        trainable = resolve_modules(phase.trainable, model)
        costs.append(_train_seconds_per_image(model, trainable, images, probe_steps))
    train_cost = sum(s * c for s, c in zip(shares, costs, strict=True)) / max(sum(shares), 1)

    loader = build_dataloader(
        spec.train, imgsz, probe_batch, augment=True, hyp=load_hyp(hyp), workers=0, seed=seed
    )
    load_cost = _loader_seconds_per_image(loader, probe_steps)
    val_cost = _val_seconds_per_image(model, images, probe_steps)

    epoch_seconds = len(spec.train) * (train_cost + load_cost) + len(spec.val) * val_cost
    epochs = max(1, int(seconds // epoch_seconds))
    probe = {
        "train_s_per_image_by_phase": costs,
        "loader_s_per_image": load_cost,
        "val_s_per_image": val_cost,
        "epoch_seconds_estimate": epoch_seconds,
        "epochs": epochs,
    }
    return epochs, probe


def _train_seconds_per_image(model, trainable: list[int], images: torch.Tensor, steps: int) -> float:
    """Seconds per image of forward + backward with only ``trainable`` modules learning (after a warm-up)."""
    from yolo_transfer.strategies.trainable import freeze_modules, no_grad_prefix, set_bn_mode

    freeze_modules(model, trainable)
    model.train()
    set_bn_mode(model, trainable, "frozen")
    prefix = no_grad_prefix(trainable)
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()
        outputs = model(images, no_grad_prefix=prefix)
        sum(out.float().mean() for out in outputs).backward()
        model.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / (steps * len(images))


def _val_seconds_per_image(model, images: torch.Tensor, steps: int) -> float:
    """Seconds per image of an eval-mode forward pass."""
    model.eval()
    with torch.no_grad():
        model(images)
        start = time.perf_counter()
        for _ in range(steps):
            model(images)
    return (time.perf_counter() - start) / (steps * len(images))


def _loader_seconds_per_image(loader, steps: int) -> float:
    """Seconds per image the augmenting data loader needs in the calling process."""
    batches = iter(loader)
    start = time.perf_counter()
    seen = 0
    for _ in range(steps):
        try:
            seen += len(next(batches)[0])
        except StopIteration:
            break
    return (time.perf_counter() - start) / max(seen, 1)
