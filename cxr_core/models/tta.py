"""Test-time augmentation: which views of an image a model's probabilities average over.

A model card records the mode its validation numbers were computed with, and every path that
scores images (evaluation, the Predictor and through it the dashboard) goes through
:func:`class_probabilities`, so the numbers on a card are the numbers a user gets. The same
function applies the card's temperature scaling (calibration), for the same reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.utils.tasks import TTA_MODES

# "hflip": the mean of the image and its mirror. Chest films are not left-right symmetric
# (heart, aortic knob), but CNNs trained with flip augmentation score both views alike,
# and averaging the two steadies the ranking of small training sets.


def check_tta(mode: str) -> str:
    """``mode`` if it is a known test-time augmentation, else a ConfigError listing them."""
    if mode not in TTA_MODES:
        raise ConfigError(
            f"unknown test-time augmentation {mode!r}; choose one of: {', '.join(TTA_MODES)}"
        )
    return mode


def activate(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Per-class probabilities: sigmoid for multi-label models, softmax for single-label ones."""
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


# Probabilities are clipped to [EPS, 1 - EPS] before their logit is taken (a saturated 0.0 or
# 1.0 would be an infinite logit); the same constant as cxr_core.metrics.temperature uses.
EPS = 1e-7


def calibrate(
    probs: torch.Tensor, temperature: Sequence[float] | None, *, multilabel: bool
) -> torch.Tensor:
    """Temperature-scaled probabilities: ``sigmoid(logit(p) / T_c)`` per class (multilabel) or
    ``softmax(log(p) / T)`` (multiclass); ``temperature`` None returns ``probs`` unchanged.

    Scaling is applied to the TTA-averaged probability, so the temperature stored in a model
    card (fitted on validation predictions that were themselves TTA averages) means the same
    thing at every place that scores an image.
    """
    if temperature is None:
        return probs
    values = [float(v) for v in temperature]
    expected = probs.shape[1] if multilabel else 1
    # Checked on the Python floats, not on a tensor, so the graph stays traceable for export.
    if len(values) != expected or not all(math.isfinite(v) and v > 0 for v in values):
        wanted = "one positive temperature" + (" per class" if multilabel else "")
        raise ConfigError(
            f"temperature scaling needs {wanted} ({expected}); got {list(temperature)}"
        )
    t = torch.tensor(values, dtype=torch.float32, device=probs.device)
    clipped = probs.float().clamp(EPS, 1 - EPS)
    if multilabel:
        return torch.sigmoid(torch.logit(clipped) / t)
    return torch.softmax(torch.log(clipped) / t, dim=1)


def class_probabilities(
    model: nn.Module,
    batch: torch.Tensor,
    *,
    multilabel: bool,
    tta: str = "none",
    temperature: Sequence[float] | None = None,
) -> torch.Tensor:
    """(B, C) float32 probabilities of a prepared batch, averaged over the ``tta`` views and
    then calibrated with the model card's ``temperature`` (see :func:`calibrate`)."""
    check_tta(tta)
    probs = activate(model(batch).float(), multilabel)
    if tta == "hflip":
        probs = (probs + activate(model(torch.flip(batch, dims=[-1])).float(), multilabel)) / 2
    return calibrate(probs, temperature, multilabel=multilabel)
