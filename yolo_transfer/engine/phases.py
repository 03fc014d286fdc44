"""The per-phase settings the trainer derives from a strategy's Phase: hyp, length and what it holds live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from yolo_transfer.data import load_hyp
from yolo_transfer.strategies import Phase

AUGMENT_KEYS = (  # the keys a phase's ``hyp`` preset changes; optimizer and loss values stay the run's
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste",
)  # fmt: skip


@dataclass
class ActivePhase:
    """What the training loop holds while a phase runs; rebuilt from the run's progress on resume."""

    index: int
    phase: Phase
    trainable: list[int]  # module indices that train
    prefix: int  # leading frozen modules, run without autograd
    batch: int
    loader: torch.utils.data.DataLoader
    optimizer: torch.optim.Optimizer
    lr0: float
    hyp: dict  # the run's hyp with the phase's augmentation preset and warmup overrides
    length: int  # most epochs the phase may run
    lf: Callable[[int], float]  # epoch in phase -> LR multiplier
    warmup: int  # warmup iterations
    steady: frozenset[int] = frozenset()  # modules that skip the warmup (trained on from the previous phase)
    stand_ins: torch.nn.ModuleList | None = None  # BN-folded copies of the frozen prefix (fused_frozen.py)


def phase_hyp(run_hyp: dict, phase: Phase) -> dict:
    """The run's hyp with the augmentation values of the phase's preset and its warmup overrides."""
    hyp = dict(run_hyp)
    if phase.hyp is not None:
        preset = load_hyp(phase.hyp)
        hyp.update({key: preset[key] for key in AUGMENT_KEYS})
    if phase.warmup_epochs is not None:
        hyp["warmup_epochs"] = phase.warmup_epochs
    if phase.warmup_bias_lr is not None:
        hyp["warmup_bias_lr"] = phase.warmup_bias_lr
    return hyp


def phase_length(phase: Phase, budget: int, start_epoch: int) -> int:
    """Most epochs a phase starting at ``start_epoch`` may run: its epochs, plateau maximum or the rest."""
    left = budget - start_epoch
    limit = phase.epochs or (phase.plateau or {}).get("max_epochs") or left
    return max(1, min(int(limit), left))


def module_ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    spans, start = [], indices[0]
    for prev, cur in zip(indices, [*indices[1:], None], strict=True):
        if cur != prev + 1:
            spans.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(spans)
