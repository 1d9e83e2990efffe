"""Test-time augmentation: which views of an image a model's probabilities average over.

A model card records the mode its validation numbers were computed with, and every path that
scores images (evaluation, the Predictor and through it the dashboard) goes through
:func:`class_probabilities`, so the numbers on a card are the numbers a user gets.
"""

from __future__ import annotations

import torch
from torch import nn

from cxr_core.errors import ConfigError

# "hflip": the mean of the image and its mirror. Chest films are not left-right symmetric
# (heart, aortic knob), but CNNs trained with flip augmentation score both views alike,
# and averaging the two steadies the ranking of small training sets.
TTA_MODES: tuple[str, ...] = ("none", "hflip")


def check_tta(mode: str) -> str:
    """``mode`` if it is a known test-time augmentation, else a ConfigError listing them."""
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown test-time augmentation {mode!r}; choose one of: {', '.join(TTA_MODES)}")
    return mode


def activate(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-class probabilities: sigmoid for multi-label models, softmax for single-label ones."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def class_probabilities(model: nn.Module, batch: torch.Tensor, *, multilabel: bool, tta: str = "none") -> torch.Tensor:
    """(B, C) float32 probabilities of a prepared batch, averaged over the ``tta`` views."""
    check_tta(tta)
    probs = activate(model(batch).float(), multilabel)
    if tta == "hflip":
        probs = (probs + activate(model(torch.flip(batch, dims=[-1])).float(), multilabel)) / 2
    return probs
