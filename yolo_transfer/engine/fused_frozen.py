"""A BN-folded copy of the frozen prefix, run in its place while training: fewer ops, same features.

When a phase freezes the leading modules with their BatchNorm in eval mode (``bn: frozen`` or
``recalibrate``), those modules compute a fixed function: conv, then an affine BN, then SiLU. Folding each BN
into its conv (``Conv.fuse``) removes a pass over every activation of the prefix. The folded copy is only a
stand-in for the forward pass (``DetectionModel.forward(stand_ins=...)``): the model's own layers, their
parameters and BN buffers, the EMA and every checkpoint stay exactly as they were. Outputs differ from the
unfolded layers by float rounding only.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from yolo_transfer.models.common import Conv


def fused_prefix(
    model: nn.Module, prefix: int, bn_mode: str, memory_format: torch.memory_format = torch.contiguous_format
) -> nn.ModuleList | None:
    """BN-folded, eval-mode, gradient-free copies of ``model.model[:prefix]``; None when nothing folds.

    Only a prefix whose BN is frozen folds: with ``bn_mode == "train"`` the statistics still move.
    Build it after the phase's BN statistics are final (after AdaBN), and again for every phase.
    """
    if prefix <= 0 or bn_mode == "train":
        return None
    layers = copy.deepcopy(nn.ModuleList(model.model[:prefix])).eval()
    for module in layers.modules():
        if isinstance(module, Conv):
            module.fuse()
    layers.requires_grad_(False)
    return layers.to(memory_format=memory_format)
