"""Bootstrap bands around ROC and precision-recall curves.

A curve drawn from 40 positives looks as exact as one drawn from 4,000. The band shows how far
it moves when patients are resampled: on a fixed grid of false positive rates, each resample's
true positive rate (the ROC "vertical average"), and on a fixed grid of recalls, each
resample's precision at the highest threshold reaching that recall; the band is the
pointwise percentile interval over resamples. Resamples are the patient-level ones of
:func:`~cxr_core.metrics.bootstrap.resample_weights`, so the band agrees with the AUROC and AP
intervals of the report. A resample is the same sorted cases with other weights, so every
resample's curve is a cumulative sum over one sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr_core.metrics._inputs import MetricInputError, check_pair
from cxr_core.metrics.bootstrap import resample_weights

GRID_POINTS = 101


@dataclass(frozen=True)
class CurveBand:
    """One class: ``x`` grid and the band's ``low``/``high`` (NaN where no resample defines it)."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class ClassBands:
    roc: CurveBand
    pr: CurveBand
    n_used: int


def _sorted_class(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Known cases by descending score, positive indicator, and the last position of each tie group."""
    known = np.nonzero(~np.isnan(labels))[0]
    order = known[np.argsort(-scores[known], kind="stable")]
    ordered = scores[order]
    ends = np.r_[np.nonzero(np.diff(ordered))[0], ordered.size - 1] if ordered.size else ordered
    return order, labels[order] == 1, ends.astype(int)


def _class_band(
    weights: np.ndarray, positive: np.ndarray, ends: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(TPR on the FPR grid, precision on the recall grid), one row per resample."""
    tp = np.cumsum(weights * positive, axis=1)[:, ends]
    fp = np.cumsum(weights * ~positive, axis=1)[:, ends]
    n_pos, n_neg = tp[:, -1:], fp[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr, fpr = tp / n_pos, fp / n_neg
        precision = tp / (tp + fp)
    roc = np.full((len(weights), grid.size), np.nan)
    pr = np.full((len(weights), grid.size), np.nan)
    for b in range(len(weights)):
        if n_pos[b, 0] > 0 and n_neg[b, 0] > 0:
            at = np.searchsorted(fpr[b], grid, side="right") - 1  # last point with FPR <= grid
            roc[b] = np.where(at >= 0, tpr[b, np.maximum(at, 0)], 0.0)
        if n_pos[b, 0] > 0:
            reach = np.minimum(np.searchsorted(tpr[b], grid, side="left"), tpr.shape[1] - 1)
            pr[b] = precision[b, reach]
    return roc, pr


def _percentiles(draws: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.full(draws.shape[1], np.nan), np.full(draws.shape[1], np.nan)
    defined = np.isfinite(draws).any(axis=0)
    if defined.any():
        low[defined], high[defined] = np.nanpercentile(
            draws[:, defined], [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0
        )
    return low, high


def curve_bands(
    y_true: object,
    y_score: object,
    *,
    groups: object = None,
    n_boot: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    grid_points: int = GRID_POINTS,
) -> list[ClassBands]:
    """Per class, the ROC band (TPR over an FPR grid) and the PR band (precision over a recall grid).

    ``groups`` (patient IDs) resample patients; unknown labels (NaN) are left out per class.
    """
    if int(n_boot) < 1:
        raise MetricInputError(f"curve bands need at least one resample; got n_boot={n_boot}")
    labels, scores = check_pair(y_true, y_score)
    grid = np.linspace(0.0, 1.0, int(grid_points))
    chunks = list(resample_weights(labels.shape[0], groups, n_boot=int(n_boot), seed=seed))
    weights = np.concatenate(chunks, axis=0)
    out = []
    for c in range(labels.shape[1]):
        order, positive, ends = _sorted_class(labels[:, c], scores[:, c])
        if ends.size == 0:
            empty = CurveBand(grid, np.full(grid.size, np.nan), np.full(grid.size, np.nan))
            out.append(ClassBands(empty, empty, 0))
            continue
        roc, pr = _class_band(weights[:, order], positive, ends, grid)
        used = int(np.isfinite(roc).all(axis=1).sum())
        out.append(
            ClassBands(
                CurveBand(grid, *_percentiles(roc, alpha)),
                CurveBand(grid, *_percentiles(pr, alpha)),
                used,
            )
        )
    return out
