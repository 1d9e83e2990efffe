"""Confusion counts at a threshold, the metrics derived from them, and multiclass matrices.

A case is called positive when ``score >= threshold``. Counts are float arrays (exact whole
numbers) so that a class whose threshold is undefined (NaN) can carry NaN counts instead of
silently calling everything negative.

Moving a threshold slider must not re-scan 25,596 x 14 scores: :class:`SortedScores` sorts each
class once and then answers any threshold vector with one binary search per class.
"""

from __future__ import annotations

import numpy as np

from cxr_core.metrics._inputs import (
    MetricInputError,
    check_labels,
    check_pair,
    check_scores,
    class_thresholds,
)
from cxr_core.metrics.ranking import rank_columns

COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "tn", "fn")
METRIC_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")


def _with_undefined(counts: dict[str, np.ndarray], thresholds: np.ndarray) -> dict[str, np.ndarray]:
    undefined = np.isnan(thresholds)
    if undefined.any():
        for name in COUNT_NAMES:
            counts[name][undefined] = np.nan
    return counts


def confusion_counts(y_true: object, y_score: object, thresholds: object) -> dict[str, np.ndarray]:
    """tp, fp, tn, fn per class (each (C,)); unknown labels are left out for that class only.

    ``thresholds`` is one value for all classes or one per class; NaN gives NaN counts.
    """
    labels, scores = check_pair(y_true, y_score)
    t = class_thresholds(thresholds, labels.shape[1])
    called = scores >= t
    pos, neg = labels == 1, labels == 0
    counts = {
        "tp": np.sum(called & pos, axis=0).astype(np.float64),
        "fp": np.sum(called & neg, axis=0).astype(np.float64),
        "tn": np.sum(~called & neg, axis=0).astype(np.float64),
        "fn": np.sum(~called & pos, axis=0).astype(np.float64),
    }
    return _with_undefined(counts, t)


def check_decisions(decisions: object, n_cases: int, n_classes: int) -> np.ndarray:
    """(N, C) boolean positive calls of the same shape as the labels."""
    called = np.asarray(decisions)
    if called.ndim == 1:
        called = called[:, None]
    if called.shape != (n_cases, n_classes):
        raise MetricInputError(
            f"decisions have shape {called.shape} but the labels are {(n_cases, n_classes)}; give one "
            "positive/negative call per case and class"
        )
    if called.dtype != np.bool_:
        if not np.all((called == 0) | (called == 1)):
            raise MetricInputError("decisions must be True/False (or 1/0) positive calls")
        called = called.astype(bool)
    return called


def decision_counts(y_true: object, decisions: object) -> dict[str, np.ndarray]:
    """tp, fp, tn, fn per class (each (C,)) for given positive calls instead of a threshold.

    For decisions no single threshold describes: argmax of a multiclass model, or out-of-fold
    calls where each case was judged by the threshold of another fold.
    """
    labels = check_labels(y_true)
    called = check_decisions(decisions, *labels.shape)
    pos, neg = labels == 1, labels == 0
    return {
        "tp": np.sum(called & pos, axis=0).astype(np.float64),
        "fp": np.sum(called & neg, axis=0).astype(np.float64),
        "tn": np.sum(~called & neg, axis=0).astype(np.float64),
        "fn": np.sum(~called & pos, axis=0).astype(np.float64),
    }


def argmax_decisions(y_score: object) -> np.ndarray:
    """(N, C) one-hot calls of each case's highest-scored class: a multiclass model's decision.

    Scoring each class one-vs-rest on these calls gives the rows of the confusion matrix
    (sensitivity = recall on the diagonal), unlike ``prob >= 0.5`` per class, which can call
    no class or, for K = 2 at exactly 0.5, two.
    """
    scores = check_scores(y_score)
    return np.eye(scores.shape[1], dtype=bool)[np.argmax(scores, axis=1)]


class SortedScores:
    """Scores sorted once per class so any threshold vector is answered by binary search.

    ``SortedScores(y_true, y_score).at(thresholds)`` gives the same dict as
    :func:`confusion_counts` in microseconds, which is what lets the dashboard recompute all
    per-class metrics on every slider move.
    """

    def __init__(self, y_true: object, y_score: object) -> None:
        labels, scores = check_pair(y_true, y_score)
        ranked = rank_columns(labels, scores)
        n_classes = labels.shape[1]
        self.n_classes: int = n_classes
        self.sorted_scores: np.ndarray = ranked.scores
        zeros = np.zeros((n_classes, 1))
        # Column k holds the number of known positives/negatives among the k lowest scores.
        self._pos_below = np.concatenate([zeros, np.cumsum(ranked.pos, axis=1)], axis=1)
        self._neg_below = np.concatenate([zeros, np.cumsum(ranked.neg, axis=1)], axis=1)
        self.n_pos: np.ndarray = self._pos_below[:, -1].copy()
        self.n_neg: np.ndarray = self._neg_below[:, -1].copy()
        self.n_unknown: np.ndarray = labels.shape[0] - self.n_pos - self.n_neg
        self._rows = np.arange(n_classes)

    def at(self, thresholds: object) -> dict[str, np.ndarray]:
        """tp, fp, tn, fn per class (each (C,)) for one threshold per class (or one for all)."""
        t = class_thresholds(thresholds, self.n_classes)
        below = np.fromiter(
            (
                np.searchsorted(self.sorted_scores[c], t[c], side="left")
                for c in range(self.n_classes)
            ),
            dtype=np.intp,
            count=self.n_classes,
        )
        fn = self._pos_below[self._rows, below]
        tn = self._neg_below[self._rows, below]
        counts = {"tp": self.n_pos - fn, "fp": self.n_neg - tn, "tn": tn, "fn": fn}
        return _with_undefined(counts, t)

    def metrics_at(self, thresholds: object) -> dict[str, np.ndarray]:
        """:func:`threshold_metrics` of :meth:`at`; the one call a threshold slider needs."""
        return threshold_metrics(self.at(thresholds))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def threshold_metrics(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, F1 and accuracy from counts, plus the counts.

    NaN where a denominator is zero: sensitivity without positives, PPV with nothing called
    positive, F1 with neither positives nor calls (sklearn would report 0 there).
    Works on counts of any shape, e.g. (C,) or (n_resamples, C).
    """
    missing = [name for name in COUNT_NAMES if name not in counts]
    if missing:
        raise MetricInputError(
            f"counts lack {', '.join(missing)}; pass the dict from confusion_counts()"
        )
    tp, fp, tn, fn = (np.asarray(counts[name], dtype=np.float64) for name in COUNT_NAMES)
    out = {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
    }
    out.update({"tp": tp, "fp": fp, "tn": tn, "fn": fn})
    return out


def metric_denominators(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per class, how many films each metric is a share of: sensitivity the known positives,
    specificity the known negatives, PPV the films called positive, NPV those called negative,
    AUROC the smaller of positives and negatives. Small-sample rules read these, not the metric."""
    positives, negatives = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    return {
        "auroc": np.minimum(positives, negatives),
        "sensitivity": positives,
        "specificity": negatives,
        "ppv": counts["tp"] + counts["fp"],
        "npv": counts["tn"] + counts["fn"],
    }


def _check_indices(values: object, n_classes: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricInputError(
            f"{what} must be a 1-D array of class indices; got shape {arr.shape}"
        )
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise MetricInputError(f"{what} must hold whole class indices 0..{n_classes - 1}")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        bad = int(np.nonzero((arr < 0) | (arr >= n_classes))[0][0])
        raise MetricInputError(
            f"{what} row {bad} is class index {arr[bad]}, outside 0..{n_classes - 1}; "
            "check that labels and predictions use the same class list"
        )
    return arr.astype(np.int64)


def confusion_matrix(y_idx: object, pred_idx: object, n_classes: int) -> np.ndarray:
    """(K, K) counts; rows are the true class, columns the predicted class (sklearn's layout)."""
    truth = _check_indices(y_idx, n_classes, "true class indices")
    pred = _check_indices(pred_idx, n_classes, "predicted class indices")
    if truth.shape != pred.shape:
        raise MetricInputError(
            f"{truth.size} true classes but {pred.size} predictions; they must pair up"
        )
    return np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def balanced_accuracy(y_idx: object, pred_idx: object, n_classes: int) -> float:
    """Mean recall over the classes present in ``y_idx`` (as sklearn's balanced_accuracy_score).

    Classes with no true cases are left out of the mean; NaN when there are no cases at all.
    """
    matrix = confusion_matrix(y_idx, pred_idx, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(matrix)[present] / support[present]))
