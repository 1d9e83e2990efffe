"""Checking and shaping the label/score arrays every metric takes.

All metrics share one convention, so the checks live in one place: ``y_true`` is (N, C) with
1 = finding present, 0 = absent, NaN = unknown (excluded for that class only); ``y_score`` is
(N, C) finite scores. A 1-D pair is one class. Messages name the class column and the first
bad row so the person evaluating can find it in their predictions file.
"""

from __future__ import annotations

import numpy as np

from cxr_core.errors import MetricInputError


def as_2d_float(values: object, what: str) -> np.ndarray:
    """(N, C) float64 view of a 1-D or 2-D array."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise MetricInputError(
            f"{what} must be a 1-D array (one class) or a 2-D array (cases x classes); "
            f"got an array with shape {arr.shape}"
        )
    return arr


def _first_bad(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows[0]), int(cols[0])


def check_labels(y_true: object) -> np.ndarray:
    """(N, C) labels with only 0, 1 and NaN."""
    labels = as_2d_float(y_true, "y_true")
    bad = ~(np.isnan(labels) | (labels == 0) | (labels == 1))
    if bad.any():
        row, col = _first_bad(bad)
        raise MetricInputError(
            f"labels must be 1 (present), 0 (absent) or empty/NaN (unknown); class column {col} "
            f"row {row} holds {float(labels[row, col]):g} ({int(bad.sum())} such values in total). "
            "Map uncertain labels (e.g. CheXpert -1) to 0, 1 or unknown before evaluating."
        )
    return labels


def check_scores(y_score: object, what: str = "y_score") -> np.ndarray:
    """(N, C) finite scores."""
    scores = as_2d_float(y_score, what)
    bad = ~np.isfinite(scores)
    if bad.any():
        row, col = _first_bad(bad)
        raise MetricInputError(
            f"{what} must be finite numbers; class column {col} row {row} holds "
            f"{float(scores[row, col]):g} ({int(bad.sum())} such values in total). "
            "Re-run prediction for those images or drop them before evaluating."
        )
    return scores


def check_pair(
    y_true: object, y_score: object, what: str = "y_score"
) -> tuple[np.ndarray, np.ndarray]:
    """Checked (labels, scores), both (N, C) float64 with N >= 1."""
    labels = check_labels(y_true)
    scores = check_scores(y_score, what)
    if labels.shape != scores.shape:
        raise MetricInputError(
            f"labels have shape {labels.shape} but {what} has shape {scores.shape}; "
            "both must be (cases x classes) for the same cases and classes in the same order"
        )
    if labels.shape[0] == 0:
        raise MetricInputError("there are no cases to evaluate (0 rows)")
    return labels, scores


def class_thresholds(thresholds: object, n_classes: int) -> np.ndarray:
    """(C,) thresholds from a scalar or one value per class; NaN is kept (= undefined)."""
    values = np.asarray(thresholds, dtype=np.float64)
    if values.ndim == 0:
        return np.full(n_classes, float(values))
    values = values.reshape(-1)
    if values.shape[0] != n_classes:
        raise MetricInputError(
            f"got {values.shape[0]} thresholds for {n_classes} classes; give one threshold per "
            "class (in class order) or a single threshold for all"
        )
    return values
