"""Exponential moving average of a model's weights (``ema: {decay: ...}`` in a config).

With EMA on, validation, the best checkpoint and the shipped weights are the average's, not
the raw weights': the average is smoother, and it is what the run selects on.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Exponential moving average of all floating-point weights and buffers (integers copied).

    The tensors are paired once and updated with one fused ``_foreach_lerp_`` per step: a
    Python loop over a few hundred tensors launches as many kernels, which dominates a step
    on a fast GPU. ``state_dict`` tensors share storage with the modules, and loading a state
    copies in place, so the pairs stay valid for the life of the run.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self._floats = (
            [s for s, _ in pairs if s.is_floating_point()],
            [c for s, c in pairs if s.is_floating_point()],
        )
        self._others = (
            [s for s, _ in pairs if not s.is_floating_point()],
            [c for s, c in pairs if not s.is_floating_point()],
        )

    @torch.no_grad()
    def update(self) -> None:
        if self._floats[0]:
            torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - self.decay)
        for shadow, current in zip(*self._others):
            shadow.copy_(current)
