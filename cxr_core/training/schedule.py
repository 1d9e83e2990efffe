"""Learning-rate schedule: linear warm-up, then cosine decay, plateau reduction or constant.

One small class instead of chaining torch schedulers: ``LambdaLR`` would overwrite the
reductions ``ReduceLROnPlateau`` makes, and a single state of plain numbers resumes exactly.
The rate is set per optimizer step:

    lr = base_lr * plateau_scale * warmup(step) * cosine(step), never below min_lr
    (warm-up starts from base_lr / warmup_steps, so min_lr does not cut it short)

``plateau`` multiplies ``plateau_scale`` by ``factor`` after ``patience`` epochs without an
improvement of the monitored validation metric (higher is better), like ReduceLROnPlateau
in "max" mode with a relative threshold of 1e-4.
"""

from __future__ import annotations

import math

import torch


class LRSchedule:
    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        kind: str,
        total_steps: int,
        warmup_steps: int = 0,
        patience: int = 2,
        factor: float = 0.5,
        min_lr: float = 0.0,
        threshold: float = 1e-4,
    ) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, warmup_steps)
        self.patience = patience
        self.factor = factor
        self.min_lr = min_lr
        self.threshold = threshold
        self.step_count = 0
        self.plateau_scale = 1.0
        self.best = -math.inf
        self.bad_epochs = 0
        self._apply()

    def _multiplier(self) -> float:
        step = self.step_count
        m = self.plateau_scale
        warm = self.warmup_steps > 0 and step < self.warmup_steps
        if warm:
            m *= (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, max(0.0, (step - self.warmup_steps) / span))
            m *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return m

    def _apply(self) -> None:
        m = self._multiplier()
        warm = self.warmup_steps > 0 and self.step_count < self.warmup_steps
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            lr = base * m
            group["lr"] = lr if warm else max(lr, min(self.min_lr, base))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step_batch(self) -> None:
        """After each optimizer step."""
        self.step_count += 1
        self._apply()

    def step_epoch(self, metric: float) -> None:
        """After each validation, with the monitored metric (higher is better)."""
        if self.kind != "plateau" or not math.isfinite(metric):
            return
        improved = (
            not math.isfinite(self.best) or metric > self.best + abs(self.best) * self.threshold
        )
        if improved:
            self.best = metric
            self.bad_epochs = 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.plateau_scale *= self.factor
            self.bad_epochs = 0
            self._apply()

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "base_lrs": list(self.base_lrs),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state["plateau_scale"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self._apply()
