"""Overlap and boundary metrics of binary masks, with patient-level bootstrap intervals.

* Dice = 2|A∩B| / (|A|+|B|), IoU = |A∩B| / |A∪B|, per image; both empty counts as a perfect 1.
* HD95: the 95th percentile of the symmetric surface distances, in pixels (times ``spacing``),
  the definition of MedPy's ``hd95``: distances from every border pixel of the prediction to
  the reference border and from every reference border pixel to the prediction border, pooled.
  Dice hides a stray blob far from the lungs (a few pixels barely move it); HD95 does not.
  It is undefined (NaN) when exactly one of the two masks is empty, and 0 when both are.

The summary of a set of images is the mean of the per-image values; its interval resamples
patients (all images of a drawn patient enter with the weight of the draw) with the same
resampling as every other interval in :mod:`cxr_core.metrics.bootstrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxr_core.errors import MetricInputError
from cxr_core.metrics.bootstrap import resample_weights

SEGMENTATION_METRICS: tuple[str, ...] = ("dice", "iou", "hd95")
_CONNECTIVITY = ndimage.generate_binary_structure(2, 1)


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise MetricInputError(
            f"prediction mask {p.shape} and reference mask {t.shape} differ in shape"
        )
    if p.ndim < 2:
        raise MetricInputError(f"masks must be (H, W) or (N, H, W) arrays, got shape {p.shape}")
    return p.astype(bool), t.astype(bool)


def dice_score(pred: np.ndarray, target: np.ndarray) -> np.ndarray | float:
    """Dice of (H, W) masks (a float) or of each of (N, H, W) masks (an (N,) array)."""
    p, t = _pair(pred, target)
    axes = (-2, -1)
    inter = np.logical_and(p, t).sum(axis=axes)
    total = p.sum(axis=axes) + t.sum(axis=axes)
    out = np.where(total == 0, 1.0, 2.0 * inter / np.maximum(total, 1))
    return float(out) if out.ndim == 0 else out.astype(np.float64)


def iou_score(pred: np.ndarray, target: np.ndarray) -> np.ndarray | float:
    """Intersection over union of (H, W) masks (a float) or of each of (N, H, W) masks."""
    p, t = _pair(pred, target)
    axes = (-2, -1)
    inter = np.logical_and(p, t).sum(axis=axes)
    union = np.logical_or(p, t).sum(axis=axes)
    out = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(out) if out.ndim == 0 else out.astype(np.float64)


def _border(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=_CONNECTIVITY, border_value=0)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: float = 1.0) -> float:
    """95th-percentile symmetric Hausdorff distance of two (H, W) masks (see module docstring)."""
    p, t = _pair(pred, target)
    if p.ndim != 2:
        raise MetricInputError(f"hd95 takes one (H, W) pair of masks, got shape {p.shape}")
    if not p.any() and not t.any():
        return 0.0
    if not p.any() or not t.any():
        return float("nan")
    bp, bt = _border(p), _border(t)
    to_t = ndimage.distance_transform_edt(~bt, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~bp, sampling=spacing)
    return float(np.percentile(np.concatenate([to_t[bp], to_p[bt]]), 95))


def per_image_scores(
    pred: np.ndarray, target: np.ndarray, spacing: float = 1.0
) -> dict[str, np.ndarray]:
    """Dice, IoU and HD95 of each of (N, H, W) mask pairs."""
    p, t = _pair(pred, target)
    if p.ndim != 3:
        raise MetricInputError(f"per_image_scores takes (N, H, W) masks, got shape {p.shape}")
    return {
        "dice": dice_score(p, t),
        "iou": iou_score(p, t),
        "hd95": np.array([hd95(a, b, spacing) for a, b in zip(p, t)], dtype=np.float64),
    }


@dataclass(frozen=True)
class MeanCI:
    """Mean of per-image values with its percentile bootstrap interval; ``n`` images used."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def mean_with_ci(
    values: np.ndarray,
    groups: Sequence[object] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> MeanCI:
    """Mean of ``values`` (NaN entries left out) and its (1 - alpha) patient-level bootstrap CI."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    keep = ~np.isnan(v)
    if not keep.any():
        return MeanCI(float("nan"), float("nan"), float("nan"), 0)
    v = v[keep]
    g = None if groups is None else np.asarray(groups, dtype=object).reshape(-1)[keep]
    mean = float(v.mean())
    if n_boot == 0:
        return MeanCI(mean, float("nan"), float("nan"), int(v.size))
    boots = []
    for weights in resample_weights(v.size, g, n_boot=n_boot, seed=seed):
        boots.append(weights @ v / weights.sum(axis=1))
    dist = np.concatenate(boots)
    low, high = np.percentile(dist, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return MeanCI(mean, float(low), float(high), int(v.size))


def segmentation_summary(
    scores: dict[str, np.ndarray],
    groups: Sequence[object] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, MeanCI]:
    """Mean and CI of each metric in ``scores`` (as returned by :func:`per_image_scores`)."""
    return {
        name: mean_with_ci(values, groups, n_boot=n_boot, alpha=alpha, seed=seed)
        for name, values in scores.items()
    }
