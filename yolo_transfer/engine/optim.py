"""Optimizer, LR lambdas and warmup as the reference trains (spec §3.2, §3.3, §5.1, §5.2).

Parameters are split into three kinds, in the reference's group order: biases (group 0, no decay), conv and
linear weights (group 1, decayed) and normalisation weights (group 2, no decay). A strategy can give each
module index its own LR multiplier; every distinct multiplier then gets its own three groups, each group
remembering its ``lr_scale`` and ``group_kind`` so the schedule can set ``lr = base_lr * lr_scale``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Set

import numpy as np
import torch
from torch import nn

from yolo_transfer.errors import ConfigError

NOMINAL_BATCH = 64
GROUP_KINDS = ("bias", "decay", "norm")  # param_groups order within each LR scale, as the reference (v6.2+)
MIN_WARMUP_ITERATIONS = 100
GRAD_CLIP_NORM = 10.0  # gradients are clipped to this total norm before every step (yolov5 v6.2+)


def accumulate_steps(batch_size: int) -> int:
    """Batches per optimizer step so one step sees about the nominal batch of 64 images (§3.3)."""
    return max(round(NOMINAL_BATCH / batch_size), 1)


def scaled_weight_decay(weight_decay: float, batch_size: int) -> float:
    """Weight decay scaled to the effective batch ``batch_size * accumulate`` (§3.3)."""
    return weight_decay * batch_size * accumulate_steps(batch_size) / NOMINAL_BATCH


def _parameter_kinds(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(kind, parameter) for the trainable parameters of ``module`` and its submodules (§3.2 rules)."""
    kinds = []
    for sub in module.modules():
        is_norm = "Norm" in type(sub).__name__
        for name, param in sub.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if name == "bias":
                kinds.append(("bias", param))
            elif name == "weight" and is_norm:
                kinds.append(("norm", param))
            else:
                kinds.append(("decay", param))
    return kinds


def build_optimizer(
    model: nn.Module,
    name: str = "SGD",
    lr0: float = 0.01,
    momentum: float = 0.937,
    weight_decay: float = 5e-4,
    module_lr_scales: dict[int, float] | None = None,
    undecayed: set[nn.Parameter] | None = None,
    steady: Set[int] = frozenset(),
) -> torch.optim.Optimizer:
    """An optimizer over the trainable parameters of ``model.model`` in the reference's groups.

    ``weight_decay`` is applied as given (scale it with :func:`scaled_weight_decay` first). Groups are ordered
    by LR scale, largest first, and within a scale as bias, decay, norm; empty groups are left out. Weights in
    ``undecayed`` (L2-SP's anchored ones) form a group of their own, kind ``decay`` but without weight decay.
    Modules in ``steady`` get groups of their own, after the others of their scale, marked ``warmup: False``:
    :func:`set_schedule` gives them the scheduled LR and momentum from the phase's first iteration.
    """
    scales = module_lr_scales or {}
    undecayed = undecayed or set()
    by_group: dict[tuple[float, bool], dict[str, list[nn.Parameter]]] = {}
    for index, module in enumerate(model.model):
        group = (float(scales.get(index, 1.0)), index in steady)
        for kind, param in _parameter_kinds(module):
            key = "anchored" if kind == "decay" and param in undecayed else kind
            by_group.setdefault(group, {k: [] for k in (*GROUP_KINDS, "anchored")})[key].append(param)
    groups = [
        {
            "params": params,
            "lr": lr0 * scale,
            "weight_decay": weight_decay if key == "decay" else 0.0,
            "lr_scale": scale,
            "group_kind": "decay" if key == "anchored" else key,
            "warmup": not is_steady,
        }
        for scale, is_steady in sorted(by_group, key=lambda group: (-group[0], group[1]))
        for key, params in by_group[scale, is_steady].items()
        if params
    ]
    if not groups:
        raise ConfigError("nothing to train: the phase leaves no trainable parameters")
    foreach = foreach_for(groups[0]["params"][0].device)
    if name == "SGD":
        return torch.optim.SGD(groups, lr=lr0, momentum=momentum, nesterov=True, foreach=foreach)
    if name == "Adam":
        return torch.optim.Adam(groups, lr=lr0, betas=(momentum, 0.999), foreach=foreach)
    if name == "AdamW":
        return torch.optim.AdamW(groups, lr=lr0, betas=(momentum, 0.999), foreach=foreach)
    raise ConfigError(f"unknown optimizer {name!r}: use SGD, Adam or AdamW")


def foreach_for(device: torch.device) -> bool | None:
    """True on CPU and CUDA: one multi-tensor kernel per update op instead of a Python loop over the tensors
    (torch picks it by itself only on CUDA), with the loop's arithmetic, so bit-identical results; None
    elsewhere (torch's default)."""
    return True if device.type in ("cpu", "cuda") else None


def lr_lambda(epochs: int, lrf: float, cosine: bool = False) -> Callable[[int], float]:
    """LR multiplier of epoch ``e`` (0 .. epochs-1): linear, or a half-cosine, from 1 to ``lrf`` (§5.1)."""
    if cosine:
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda e: (1 - e / epochs) * (1.0 - lrf) + lrf


def warmup_iterations(warmup_epochs: float, batches_per_epoch: int, min_iterations: int | None = None) -> int:
    """Warmup length: max(round(warmup_epochs * nb), min_iterations) iterations, the floor being the
    reference's 100 unless given; 0 when ``warmup_epochs`` is 0 (§5.2)."""
    if warmup_epochs <= 0:
        return 0
    floor = MIN_WARMUP_ITERATIONS if min_iterations is None else min_iterations
    return max(round(warmup_epochs * batches_per_epoch), floor)


def scheduled_lr(
    kind: str, target_lr: float, iteration: int, warmup_iters: int, warmup_bias_lr: float
) -> float:
    """LR of a ``kind`` group at ``iteration`` of a phase whose epoch target is ``target_lr = lr0 * lf(e)``.

    During warmup (iteration <= warmup_iters) biases fall from ``warmup_bias_lr`` and the other kinds rise
    from 0, linearly to the target; afterwards it is the target itself (§5.2).
    """
    if iteration > warmup_iters or warmup_iters == 0:
        return target_lr
    start = warmup_bias_lr if kind == "bias" else 0.0
    return float(np.interp(iteration, [0, warmup_iters], [start, target_lr]))


def scheduled_momentum(momentum: float, iteration: int, warmup_iters: int, warmup_momentum: float) -> float:
    """SGD momentum rising from ``warmup_momentum`` to ``momentum`` over the warmup (§5.2)."""
    if iteration > warmup_iters or warmup_iters == 0:
        return momentum
    return float(np.interp(iteration, [0, warmup_iters], [warmup_momentum, momentum]))


def warmup_accumulate(iteration: int, warmup_iters: int, batch_size: int, current: int) -> int:
    """Accumulation steps: ramped from 1 to 64/bs during warmup, kept afterwards (§3.3)."""
    if iteration > warmup_iters or warmup_iters == 0:
        return current
    return max(1, int(np.interp(iteration, [0, warmup_iters], [1, NOMINAL_BATCH / batch_size]).round()))


def set_schedule(
    optimizer: torch.optim.Optimizer,
    lf_value: float,
    lr0: float,
    iteration: int,
    warmup_iters: int,
    hyp: dict,
) -> None:
    """Set each group's LR (and SGD momentum) at ``iteration`` of a phase, epoch multiplier ``lf_value``;
    groups marked ``warmup: False`` skip the warmup."""
    for group in optimizer.param_groups:
        warmup = warmup_iters if group.get("warmup", True) else 0
        base = scheduled_lr(group["group_kind"], lr0 * lf_value, iteration, warmup, hyp["warmup_bias_lr"])
        group["lr"] = base * group["lr_scale"]
        if "momentum" in group:
            group["momentum"] = scheduled_momentum(hyp["momentum"], iteration, warmup, hyp["warmup_momentum"])
