"""Ranking metrics (AUROC, average precision) and the ROC / PR curves behind them.

Every class is scored at once from one sort of the (N, C) score matrix: for AUROC the
Mann-Whitney statistic with midranks, for AP sklearn's step-wise sum, both written with
cumulative positive/negative counts so that unknown labels (NaN) simply weigh nothing.
Values agree with scikit-learn to ~1e-12, ties included. A class without positives or
without negatives gets NaN, never a made-up 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cxr_core.metrics._inputs import MetricInputError, check_pair


@dataclass(frozen=True)
class RankedColumns:
    """Per-class scores sorted ascending, with the tie group each position belongs to.

    All arrays are (C, N): row ``c`` is class ``c``. ``pos``/``neg`` are True where the case is a
    known positive/negative for that class (both False for unknown labels). ``start``/``end`` are
    the first/last sorted position holding the same score (inclusive), so every tie group is
    treated as one threshold. Masks are booleans and positions 32-bit where they fit: at a
    million films x 14 findings (and the micro average's 14 million pooled cases) float64
    masks and 64-bit positions cost ~0.5 GB more.
    """

    scores: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def n_pos(self) -> np.ndarray:
        return self.pos.sum(axis=1)

    @property
    def n_neg(self) -> np.ndarray:
        return self.neg.sum(axis=1)


def rank_columns(labels: np.ndarray, scores: np.ndarray) -> RankedColumns:
    """Sort each class's scores once; the shared starting point of ranking and thresholds.

    ``labels``/``scores`` must already be checked (N, C) float arrays.
    """
    scores_t = np.ascontiguousarray(scores.T)
    order = np.argsort(scores_t, axis=1, kind="stable")
    sorted_scores = np.take_along_axis(scores_t, order, axis=1)
    del scores_t
    sorted_labels = np.take_along_axis(labels.T, order, axis=1)
    del order
    pos, neg = sorted_labels == 1, sorted_labels == 0
    del sorted_labels
    n = sorted_scores.shape[1]
    index = np.int32 if n < np.iinfo(np.int32).max else np.int64
    position = np.arange(n, dtype=index)
    new_group = np.ones(sorted_scores.shape, dtype=bool)
    new_group[:, 1:] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    start = np.where(new_group, position, index(0))
    np.maximum.accumulate(start, axis=1, out=start)
    last_in_group = new_group  # a group ends where the next one starts, and at the last position
    last_in_group[:, :-1] = new_group[:, 1:]
    last_in_group[:, -1] = True
    end = np.where(last_in_group, position, index(n - 1))[:, ::-1]
    del last_in_group, new_group, position
    end = np.minimum.accumulate(end, axis=1)[:, ::-1]
    return RankedColumns(scores=sorted_scores, pos=pos, neg=neg, start=start, end=end)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


class _AtPositives(NamedTuple):
    """One class's integer counts seen from its positives, the only cases AUROC and AP add up."""

    pos_below: np.ndarray  # positives below each positive's tie group
    neg_below: np.ndarray  # negatives below it
    neg_upto: np.ndarray  # negatives up to the end of it
    n_pos: int
    n_neg: int


def _at_positives(r: RankedColumns) -> list[_AtPositives]:
    """Each class's counts, one class at a time, so memory stays at one row of cumulative counts
    whatever the number of classes."""
    out = []
    for pos, neg, start, end in zip(r.pos, r.neg, r.start, r.end, strict=True):
        at = np.flatnonzero(pos)
        first = start[at]
        cum = np.cumsum(neg, dtype=np.int64)
        neg_below, neg_upto, n_neg = cum[first] - neg[first], cum[end[at]], int(cum[-1])
        del cum  # one running count alive at a time
        cum = np.cumsum(pos, dtype=np.int64)
        out.append(_AtPositives(cum[first] - pos[first], neg_below, neg_upto, at.size, n_neg))
    return out


def _auroc(k: _AtPositives) -> float:
    # Each positive scores 1 per negative ranked strictly below it and 1/2 per tied negative.
    if k.n_pos == 0 or k.n_neg == 0:
        return np.nan
    return float(np.sum(k.neg_below + k.neg_upto) / 2 / (float(k.n_pos) * float(k.n_neg)))


def _ap(k: _AtPositives) -> float:
    # Precision at the threshold equal to each positive's score (its whole tie group called
    # positive), averaged over positives: sklearn's step-wise sum of (R_k - R_k-1) * P_k.
    if k.n_pos == 0:
        return np.nan
    tp = k.n_pos - k.pos_below
    return float(np.sum(tp / (tp + (k.n_neg - k.neg_below))) / k.n_pos)


def roc_auc(y_true: object, y_score: object) -> np.ndarray:
    """Per-class AUROC (C,); NaN for a class lacking known positives or negatives."""
    labels, scores = check_pair(y_true, y_score)
    return np.array([_auroc(k) for k in _at_positives(rank_columns(labels, scores))])


def average_precision(y_true: object, y_score: object) -> np.ndarray:
    """Per-class average precision (C,), as ``sklearn.metrics.average_precision_score``.

    NaN for a class without known positives (sklearn warns and returns 0 there). A class without
    negatives has AP 1.0, as in sklearn: every call is correct, though the number says little.
    """
    labels, scores = check_pair(y_true, y_score)
    return np.array([_ap(k) for k in _at_positives(rank_columns(labels, scores))])


def ranking_metrics(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    """(AUROC, AP), each (C,), sharing one sort; what the report and benchmark call."""
    labels, scores = check_pair(y_true, y_score)
    counts = _at_positives(rank_columns(labels, scores))
    return np.array([_auroc(k) for k in counts]), np.array([_ap(k) for k in counts])


def _one_class(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = check_pair(y_true, y_score)
    if labels.shape[1] != 1:
        raise MetricInputError(
            f"a single curve needs one class of labels and scores; got {labels.shape[1]} classes. "
            "Use curves() for all classes at once."
        )
    known = ~np.isnan(labels[:, 0])
    return labels[known, 0], scores[known, 0]


def _operating_points(
    labels: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tps, fps, thresholds) at each distinct score, highest first (sklearn's binary curve)."""
    order = np.argsort(scores, kind="stable")[::-1]
    scores, labels = scores[order], labels[order]
    last_of_group = (
        np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1] if scores.size else np.array([], int)
    )
    tps = np.cumsum(labels)[last_of_group]
    fps = last_of_group + 1 - tps
    return tps, fps.astype(np.float64), scores[last_of_group]


def roc_curve(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for one class, cases with unknown labels left out.

    Equals ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``: one point per distinct
    score (prediction positive when score >= threshold) plus the (0, 0) start at threshold +inf.
    fpr (tpr) is all NaN when there are no known negatives (positives).
    """
    labels, scores = _one_class(y_true, y_score)
    tps, fps, thresholds = _operating_points(labels, scores)
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    fpr = _safe_ratio(fps, np.full_like(fps, fps[-1]))
    tpr = _safe_ratio(tps, np.full_like(tps, tps[-1]))
    return fpr, tpr, np.r_[np.inf, thresholds]


def pr_curve(y_true: object, y_score: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) for one class, cases with unknown labels left out.

    Equals ``sklearn.metrics.precision_recall_curve`` (drop_intermediate=False): thresholds
    ascending, precision/recall one longer, ending at (1, 0). Without known positives recall is
    NaN (sklearn sets it to 1, which would draw a curve that means nothing).
    """
    labels, scores = _one_class(y_true, y_score)
    tps, fps, thresholds = _operating_points(labels, scores)
    precision = _safe_ratio(tps, tps + fps)
    recall = _safe_ratio(tps, np.full_like(tps, tps[-1] if tps.size else 0.0))
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def _downsample(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` points that keep the drawn shape of a curve.

    Points lying on a straight segment between their neighbours are dropped first; if too many
    remain, points are picked evenly along the curve's length (so steep and flat parts both keep
    detail), always keeping both ends.
    """
    n = x.size
    if n <= max_points:
        return np.arange(n)
    fx, fy = np.nan_to_num(x), np.nan_to_num(y)
    corner = np.ones(n, dtype=bool)
    corner[1:-1] = (np.diff(fx, 2) != 0) | (np.diff(fy, 2) != 0)
    keep = np.nonzero(corner)[0]
    if keep.size <= max_points:
        return keep
    length = np.r_[0.0, np.cumsum(np.hypot(np.diff(fx[keep]), np.diff(fy[keep])))]
    if length[-1] == 0:
        return keep[[0, -1]]
    targets = np.linspace(0.0, length[-1], max_points)
    picked = np.clip(np.searchsorted(length, targets), 0, keep.size - 1)
    picked = np.unique(np.r_[0, picked, keep.size - 1])
    return keep[picked]


def curves(
    y_true: object, y_score: object, max_points: int = 200
) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per class ``{"roc": {fpr, tpr, thresholds}, "pr": {precision, recall, thresholds}}``.

    Each curve has at most ``max_points`` points, chosen so the plotted shape is kept and every
    point still carries its exact threshold (hover text stays truthful). PR thresholds are padded
    with +inf for the final (precision 1, recall 0) point so all three arrays have equal length.
    """
    if max_points < 2:
        raise MetricInputError(f"max_points must be at least 2 to draw a curve; got {max_points}")
    labels, scores = check_pair(y_true, y_score)
    out = []
    for c in range(labels.shape[1]):
        fpr, tpr, roc_thr = roc_curve(labels[:, c], scores[:, c])
        precision, recall, pr_thr = pr_curve(labels[:, c], scores[:, c])
        pr_thr = np.r_[pr_thr, np.inf]
        roc_keep = _downsample(fpr, tpr, max_points)
        pr_keep = _downsample(recall, precision, max_points)
        out.append(
            {
                "roc": {
                    "fpr": fpr[roc_keep],
                    "tpr": tpr[roc_keep],
                    "thresholds": roc_thr[roc_keep],
                },
                "pr": {
                    "precision": precision[pr_keep],
                    "recall": recall[pr_keep],
                    "thresholds": pr_thr[pr_keep],
                },
            }
        )
    return out
