"""Choosing one operating threshold per class.

Candidates are the scores actually observed for cases with a known label of that class (a
case is called positive when ``score >= threshold``), so every chosen threshold is a point on
that class's ROC curve. Rules for ties and edges:

* ``max_f1`` / ``youden``: the candidate with the highest F1 / Youden's J; among equally good
  candidates the highest threshold (fewest positive calls) wins.
* ``sensitivity``: the highest threshold whose sensitivity is still >= ``value``.
* ``specificity``: the lowest threshold whose specificity is >= ``value``; when even the top
  score misses it (the top-scored case is a negative and ``value`` demands no false positives)
  the threshold is the next float above the top score, i.e. nothing is called positive.
* ``fixed``: ``value`` as given (one number, or one per class).

The result is NaN for a class where the rule is undefined: no known positives (max_f1,
youden, sensitivity) or no known negatives (youden, specificity).
"""

from __future__ import annotations

import numpy as np

from cxr_core.metrics._inputs import MetricInputError, check_pair, class_thresholds
from cxr_core.metrics.ranking import rank_columns

MAX_F1 = "max_f1"
YOUDEN = "youden"
SENSITIVITY = "sensitivity"
SPECIFICITY = "specificity"
FIXED = "fixed"

THRESHOLD_METHODS: tuple[str, ...] = (MAX_F1, YOUDEN, SENSITIVITY, SPECIFICITY, FIXED)

METHOD_LABELS: dict[str, str] = {
    MAX_F1: "Maximise F1",
    YOUDEN: "Maximise Youden's J (sensitivity + specificity - 1)",
    SENSITIVITY: "Highest threshold reaching a target sensitivity",
    SPECIFICITY: "Lowest threshold reaching a target specificity",
    FIXED: "Fixed threshold",
}

METHODS_NEEDING_VALUE: frozenset[str] = frozenset({SENSITIVITY, SPECIFICITY, FIXED})


def _last_true(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: index of the last True and whether there is one."""
    n = mask.shape[1]
    return n - 1 - np.argmax(mask[:, ::-1], axis=1), mask.any(axis=1)


def _best_highest(objective: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row: the last (highest-threshold) index among candidates with the maximal objective."""
    masked = np.where(candidate, objective, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    return _last_true(candidate & (masked == best))[0]


def _check_value(method: str, value: object, n_classes: int) -> np.ndarray | float:
    if value is None:
        raise MetricInputError(f"threshold method {method!r} needs a value (e.g. 0.9 for {method} >= 90%)")
    if method == FIXED:
        values = class_thresholds(value, n_classes)
        if not np.all(np.isfinite(values)):
            raise MetricInputError("fixed thresholds must be finite numbers")
        return values
    target = float(np.asarray(value, dtype=np.float64))
    if not 0.0 <= target <= 1.0:
        raise MetricInputError(f"target {method} must be between 0 and 1 (e.g. 0.9 for 90%); got {target}")
    return target


def select_thresholds(y_true: object, y_score: object, method: str, value: object = None) -> np.ndarray:
    """One threshold per class (C,) by ``method``; see the module docstring for tie rules."""
    if method not in THRESHOLD_METHODS:
        raise MetricInputError(f"unknown threshold method {method!r}; choose one of {', '.join(THRESHOLD_METHODS)}")
    labels, scores = check_pair(y_true, y_score)
    n_classes = labels.shape[1]
    target = _check_value(method, value, n_classes) if method in METHODS_NEEDING_VALUE else None
    if method == FIXED:
        return np.asarray(target, dtype=np.float64)

    r = rank_columns(labels, scores)
    n_pos, n_neg = r.n_pos[:, None], r.n_neg[:, None]
    known = (r.pos + r.neg) > 0
    # Counts when the threshold is the score at each sorted position (its tie group included).
    fn = np.take_along_axis(np.cumsum(r.pos, axis=1) - r.pos, r.start, axis=1)
    tn = np.take_along_axis(np.cumsum(r.neg, axis=1) - r.neg, r.start, axis=1)
    tp, fp = n_pos - fn, n_neg - tn
    rows = np.arange(n_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity, specificity = tp / n_pos, tn / n_neg
        if method == MAX_F1:
            idx = _best_highest(2 * tp / (2 * tp + fp + fn), known)
            defined = r.n_pos > 0
        elif method == YOUDEN:
            idx = _best_highest(sensitivity + specificity - 1.0, known)
            defined = (r.n_pos > 0) & (r.n_neg > 0)
        elif method == SENSITIVITY:
            idx, _ = _last_true(known & (sensitivity >= target))
            defined = r.n_pos > 0
        else:
            reaching = known & (specificity >= target)
            idx = np.argmax(reaching, axis=1)
            top_known = np.where(known, r.scores, -np.inf).max(axis=1)
            above_top = np.nextafter(top_known, np.inf)
            chosen = np.where(reaching.any(axis=1), r.scores[rows, idx], above_top)
            return np.where(r.n_neg > 0, chosen, np.nan)
    return np.where(defined, r.scores[rows, idx], np.nan)
