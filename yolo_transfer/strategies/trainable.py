"""The mechanics of a phase, applied by the trainer: what trains, BatchNorm modes, AdaBN, LR scales, L2-SP.

Modules are the entries of ``model.model`` (the reference's ``model.{i}``), selected with the grammar of
``strategies/selection.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from yolo_transfer.errors import ConfigError
from yolo_transfer.models import model_groups
from yolo_transfer.strategies.phase import BN_MODES, Phase
from yolo_transfer.strategies.selection import item_modules, parse_item, select_modules


@dataclass(frozen=True)
class PhaseSetup:
    """What :func:`apply_phase` set up: the training modules, their parameter count, the no-grad prefix."""

    trainable: list[int]
    trainable_params: int
    prefix: int


def apply_phase(model: nn.Module, phase: Phase) -> PhaseSetup:
    """Set ``model`` up for ``phase`` as every user of a phase must (trainer, cost model, benchmarks): only
    the phase's modules learn, the model is in train mode with the phase's BatchNorm policy for the others,
    and the leading frozen modules may run without an autograd graph."""
    trainable = resolve_modules(phase.trainable, model)
    params = freeze_modules(model, trainable)
    model.train()
    set_bn_mode(model, trainable, phase.bn)
    return PhaseSetup(trainable, params, no_grad_prefix(trainable))


def resolve_modules(spec: list[str | int], model: nn.Module) -> list[int]:
    """Sorted indices of the modules that train under ``spec`` (e.g. ``["neck", "head"]`` -> 10..24)."""
    return select_modules(spec, len(model.model), model_groups(model))


def freeze_modules(model: nn.Module, trainable: list[int]) -> int:
    """Set ``requires_grad`` so only the ``trainable`` modules learn; return the trainable parameter count."""
    keep = set(trainable)
    for index, module in enumerate(model.model):
        module.requires_grad_(index in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_bn_mode(model: nn.Module, trainable: list[int], mode: str) -> None:
    """Apply the BatchNorm policy to the non-trainable modules; call it after ``model.train()``.

    ``frozen`` and ``recalibrate`` put their BN layers in eval mode, so the running statistics stay as they
    are (for ``recalibrate``: as ``recalibrate_bn`` re-estimated them); ``train`` leaves them in train mode,
    where the statistics drift with the training batches as in yolov5.
    """
    if mode not in BN_MODES:
        raise ConfigError(f"BatchNorm mode must be one of {', '.join(BN_MODES)}, got {mode!r}")
    if mode == "train":
        return
    keep = set(trainable)
    for index, module in enumerate(model.model):
        if index not in keep:
            for layer in module.modules():
                if isinstance(layer, _BatchNorm):
                    layer.eval()


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, loader: Iterable, modules: list[int], device: torch.device | str, max_batches: int = 50
) -> None:
    """AdaBN: re-estimate the running statistics of the BN layers in ``modules`` on the loader's images.

    The loader yields ``(images, ...)`` batches, images uint8 (or float in [0, 1]) NCHW. The statistics are
    reset and replaced by the plain average over up to ``max_batches`` batches (``momentum=None``); other BN
    layers keep theirs (eval mode). No gradients; the parameters and the layers' momentum are unchanged, and
    ``model.train(previous mode)`` is restored, so call ``set_bn_mode`` afterwards.
    (``torch.optim.swa_utils.update_bn`` always resets every BN layer and expects float inputs.)
    """
    chosen = set(modules)
    targets = [
        layer
        for index, module in enumerate(model.model)
        if index in chosen
        for layer in module.modules()
        if isinstance(layer, _BatchNorm)
    ]
    momenta = [layer.momentum for layer in targets]
    was_training = model.training
    model.train()
    for layer in model.modules():
        if isinstance(layer, _BatchNorm):
            layer.eval()
    for layer in targets:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    try:
        for batch_index, batch in enumerate(loader):
            if batch_index >= max_batches:
                break
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            scale = 255.0 if images.dtype == torch.uint8 else 1.0
            model(images.to(device, non_blocking=True).float() / scale)
    finally:
        for layer, momentum in zip(targets, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)


def no_grad_prefix(trainable: list[int]) -> int:
    """How many leading modules are frozen: they can run under ``torch.no_grad()`` (no autograd graph)."""
    return min(trainable) if trainable else 0


def module_lr_scales(model: nn.Module, phase: Phase) -> dict[int, float]:
    """LR multiplier of every module: the product of the phase's ``lr_mult`` entries that select it, times
    ``layer_decay ** (depth from the head)`` where depth is ``last module index - index``."""
    count = len(model.model)
    groups = model_groups(model)
    scales = {index: 1.0 for index in range(count)}
    for key, mult in phase.lr_mult.items():
        for index in item_modules(parse_item(key), count, groups):
            scales[index] *= mult
    if phase.layer_decay is not None:
        for index in scales:
            scales[index] *= phase.layer_decay ** (count - 1 - index)
    return scales


class L2SP:
    """L2-SP (Li et al. 2018): ``strength * sum ||w - w_pretrained||^2`` over the transferred weights.

    As published, the pull towards the starting point replaces weight decay for the weights that came from the
    pretrained model (multi-dimensional ``weight`` tensors not named in ``fresh``), while freshly initialised
    layers (``fresh``: the Detect output convs of new classes) keep the plain L2 of weight decay: the trainer
    leaves :attr:`anchor`'s parameters out of the decayed optimizer group. The anchor is the model as it is
    when this is created.
    """

    def __init__(self, model: nn.Module, strength: float, fresh: Iterable[str] = ()):
        if strength < 0:
            raise ConfigError(f"L2-SP strength must be >= 0, got {strength}")
        self.strength = strength
        fresh = set(fresh)
        params = model.named_parameters()
        self.anchor = {
            name: param.detach().clone()
            for name, param in params
            if _is_anchored(name, param) and name not in fresh
        }

    def penalty(self, model: nn.Module) -> torch.Tensor:
        """The penalty for the model's current weights (a scalar with a graph to the trainable weights)."""
        terms = [
            (param - self.anchor[name]).pow(2).sum()
            for name, param in model.named_parameters()
            if param.requires_grad and name in self.anchor
        ]
        if not terms or self.strength == 0:
            return torch.zeros((), device=next(model.parameters()).device)
        return self.strength * torch.stack(terms).sum()


def _is_anchored(name: str, param: nn.Parameter) -> bool:
    return name.endswith("weight") and param.ndim > 1
