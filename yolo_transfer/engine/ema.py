"""Exponential moving average of the model weights with the reference's decay ramp (spec §5.3)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema``, an eval-mode copy of the model averaged after every optimizer step.

    decay(u) = decay * (1 - exp(-u / tau)) with u the number of updates, so early updates follow the
    model closely. Every floating-point state_dict entry (parameters, BN buffers, anchors) is averaged;
    integer buffers such as ``num_batches_tracked`` are left alone. The update is one multi-tensor lerp
    (``torch._foreach_lerp_``), so entries the model does not change (frozen parameters and BN statistics)
    stay bit-identical in the EMA.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.ema = copy.deepcopy(model).eval()
        for param in self.ema.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average ``model`` into the EMA; call once per optimizer step."""
        self.updates += 1
        d = self.current_decay()
        ema_state, model_state = self.ema.state_dict(), model.state_dict()
        keys = [key for key, value in ema_state.items() if value.is_floating_point()]
        ema_values, model_values = [ema_state[k] for k in keys], [model_state[k].detach() for k in keys]
        torch._foreach_lerp_(ema_values, model_values, 1 - d)  # = d*v + (1-d)*m; exact when m == v
