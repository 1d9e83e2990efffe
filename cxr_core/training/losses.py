"""Training losses that understand unknown labels.

Manifests mark unknown labels as NaN (CheXpert "uncertain/blank", a disease folder that
says nothing about other findings). Multilabel losses average over the known entries only,
so an unknown label neither pushes a prediction up nor down; a batch with nothing known
gives a zero loss (and zero gradients) instead of NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.utils.tasks import Task

LossKind = Literal["bce", "ce", "focal"]


def _as_array(labels: object) -> np.ndarray:
    arr = (
        labels.detach().cpu().numpy()
        if isinstance(labels, torch.Tensor)
        else np.asarray(labels, dtype=np.float64)
    )
    return arr.astype(np.float64)


def pos_weight_from_labels(labels: object, max_weight: float = 50.0) -> torch.Tensor:
    """Per-class ``n_negative / n_positive`` over the known entries of an (N, C) label matrix.

    Rare findings (NIH Hernia: ~0.2% positive) would otherwise be ignored by BCE. Weights are
    clipped to ``[1/max_weight, max_weight]``; a class with no known positive gets ``max_weight``.
    """
    arr = _as_array(labels)
    if arr.ndim != 2:
        raise ConfigError(
            f"labels for pos_weight must be an (images, classes) matrix, got shape {arr.shape}"
        )
    known = ~np.isnan(arr)
    n_pos = np.where(known, arr == 1, False).sum(axis=0).astype(np.float64)
    n_neg = np.where(known, arr == 0, False).sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(n_pos > 0, n_neg / np.maximum(n_pos, 1), max_weight)
    return torch.tensor(np.clip(ratio, 1.0 / max_weight, max_weight), dtype=torch.float32)


def class_weights_from_labels(
    labels: object, num_classes: int | None = None, max_weight: float = 50.0
) -> torch.Tensor:
    """ "Balanced" class weights ``n_samples / (n_classes * n_c)`` for cross-entropy.

    ``labels`` is one-hot (N, C) (rows with NaN are skipped) or class indices (N,). Same
    formula as scikit-learn's ``compute_class_weight("balanced")``; an absent class gets
    ``max_weight`` and all weights are clipped to ``[1/max_weight, max_weight]``.
    """
    arr = _as_array(labels)
    if arr.ndim == 2:
        arr = arr[~np.isnan(arr).any(axis=1)]
        num_classes = num_classes or arr.shape[1]
        idx = arr.argmax(axis=1)
    elif arr.ndim == 1:
        idx = arr[~np.isnan(arr)].astype(np.int64)
        if num_classes is None:
            num_classes = int(idx.max()) + 1 if idx.size else 0
    else:
        raise ConfigError(
            f"labels for class weights must be one-hot (N, C) or indices (N,), got shape {arr.shape}"
        )
    if not num_classes:
        raise ConfigError("cannot compute class weights: no labelled images")
    counts = np.bincount(idx, minlength=num_classes).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(idx) / (num_classes * np.maximum(counts, 1)), max_weight)
    return torch.tensor(np.clip(weights, 1.0 / max_weight, max_weight), dtype=torch.float32)


def _masked_mean(loss: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean over the known entries; 0 (still attached to the graph) when none are known."""
    loss = torch.where(known, loss, torch.zeros_like(loss))
    return loss.sum() / known.sum().clamp(min=1)


class MaskedBCEWithLogitsLoss(nn.Module):
    """Binary cross-entropy over multilabel logits, ignoring NaN targets."""

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer(
            "pos_weight",
            None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32),
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        filled = torch.where(known, targets, torch.zeros_like(targets)).to(logits.dtype)
        loss = F.binary_cross_entropy_with_logits(
            logits, filled, pos_weight=self.pos_weight, reduction="none"
        )
        return _masked_mean(loss, known)


class FocalLoss(nn.Module):
    """Multilabel focal loss (Lin et al. 2017), ignoring NaN targets.

    ``gamma`` down-weights easy, confidently-right entries; ``alpha`` (optional) weights
    positives by ``alpha`` and negatives by ``1 - alpha``. ``gamma=0, alpha=None`` is BCE.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = None, pos_weight: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ConfigError(f"focal loss gamma must be >= 0, not {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"focal loss alpha must be in [0, 1], not {alpha}")
        self.gamma = float(gamma)
        self.alpha = alpha
        self.register_buffer(
            "pos_weight",
            None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32),
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        t = torch.where(known, targets, torch.zeros_like(targets)).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(
            logits, t, pos_weight=self.pos_weight, reduction="none"
        )
        p = torch.sigmoid(logits)
        p_t = p * t + (1 - p) * (1 - t)
        loss = bce * (1 - p_t).pow(self.gamma) if self.gamma else bce
        if self.alpha is not None:
            loss = loss * (self.alpha * t + (1 - self.alpha) * (1 - t))
        return _masked_mean(loss, known)


class MaskedCrossEntropyLoss(nn.Module):
    """Cross-entropy for exclusive classes; targets are one-hot rows or class indices.

    One-hot rows containing NaN (label unknown) are ignored; with ``class_weight`` the mean
    is weighted as in :func:`torch.nn.functional.cross_entropy`. A batch with nothing known
    gives 0 without asking the host whether it is empty (on a GPU that question would stall
    every step until the forward pass finished).
    """

    def __init__(self, class_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer(
            "class_weight",
            None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32),
        )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == logits.ndim:
            known = ~torch.isnan(targets).any(dim=1)
            index = torch.where(
                known,
                torch.nan_to_num(targets).argmax(dim=1),
                torch.full_like(known, -100, dtype=torch.long),
            )
        else:
            index = targets.long()
        known = index != -100
        losses = F.cross_entropy(
            logits, index, weight=self.class_weight, ignore_index=-100, reduction="none"
        )
        weights = known.to(losses.dtype)
        if self.class_weight is not None:
            weights = weights * self.class_weight.to(losses.dtype)[index.clamp(min=0)]
        return losses.sum() / weights.sum().clamp(min=torch.finfo(losses.dtype).tiny)


def build_loss(
    task: str,
    kind: LossKind = "bce",
    *,
    pos_weight: torch.Tensor | None = None,
    class_weight: torch.Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | None = None,
) -> nn.Module:
    """The loss for a label space's ``task``."""
    if task == Task.MULTILABEL:
        if kind == "bce":
            return MaskedBCEWithLogitsLoss(pos_weight)
        if kind == "focal":
            return FocalLoss(gamma=gamma, alpha=alpha, pos_weight=pos_weight)
        raise ConfigError(f"loss {kind!r} does not fit a multilabel task; use 'bce' or 'focal'")
    if task == Task.MULTICLASS:
        if kind == "ce":
            return MaskedCrossEntropyLoss(class_weight)
        raise ConfigError(
            f"loss {kind!r} does not fit a multiclass task (exactly one class per image); use 'ce'"
        )
    raise ConfigError(f"unknown task {task!r}; use one of {', '.join(t.value for t in Task)}")


class DiceBCELoss(nn.Module):
    """Segmentation loss: per-pixel BCE plus soft Dice, for (B, C, H, W) logits and 0/1 masks.

    BCE alone is dominated by the easy background (a lung mask covers ~20 % of a film) and
    trains blurry borders; soft Dice alone has weak, noisy gradients early on. Their sum is
    the usual U-Net recipe. Soft Dice is computed per image and class, then averaged, with
    ``smooth`` = 1 pixel so an empty mask predicted empty scores 1 instead of 0/0.
    """

    def __init__(
        self, dice_weight: float = 1.0, bce_weight: float = 1.0, smooth: float = 1.0
    ) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        masks = masks.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        probs = torch.sigmoid(logits)
        inter = (probs * masks).sum(dim=(2, 3))
        total = probs.sum(dim=(2, 3)) + masks.sum(dim=(2, 3))
        dice = ((2 * inter + self.smooth) / (total + self.smooth)).mean()
        return self.bce_weight * bce + self.dice_weight * (1 - dice)
