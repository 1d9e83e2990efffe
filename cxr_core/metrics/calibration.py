"""Calibration: does a predicted 0.8 mean the finding is present 80% of the time?

The Brier score (mean squared error of the probability, sklearn's ``brier_score_loss``) and
the expected calibration error (ECE) answer it with one number per class; temperature scaling
(:mod:`cxr_core.metrics.temperature`) improves it.

Bins follow ``sklearn.calibration.calibration_curve`` exactly (edges from ``linspace`` or from
score percentiles; a probability equal to an inner edge falls in the lower bin), but every bin
is returned, empty ones with count 0 and NaN means, so a plot can show where data is missing.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from cxr_core.metrics._inputs import MetricInputError, check_pair

BinStrategy = Literal["uniform", "quantile"]
BIN_STRATEGIES: tuple[str, ...] = ("uniform", "quantile")


def _check(
    y_true: object, y_prob: object, n_bins: int, strategy: str
) -> tuple[np.ndarray, np.ndarray]:
    if strategy not in BIN_STRATEGIES:
        raise MetricInputError(
            f"unknown binning strategy {strategy!r}; choose 'uniform' or 'quantile'"
        )
    if int(n_bins) < 1:
        raise MetricInputError(f"n_bins must be at least 1; got {n_bins}")
    labels, probs = check_pair(y_true, y_prob, what="y_prob")
    outside = (probs < 0) | (probs > 1)
    if outside.any():
        row, col = (int(v[0]) for v in np.nonzero(outside))
        raise MetricInputError(
            f"calibration needs probabilities in [0, 1]; class column {col} row {row} holds "
            f"{float(probs[row, col]):g}. "
            "Apply the sigmoid/softmax to model outputs first."
        )
    return labels, probs


def _bins_one_class(
    labels: np.ndarray, probs: np.ndarray, n_bins: int, strategy: str
) -> dict[str, np.ndarray]:
    known = ~np.isnan(labels)
    y, p = labels[known], probs[known]
    if strategy == "quantile" and p.size:
        edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of = np.searchsorted(edges[1:-1], p)
    count = np.bincount(bin_of, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_pred = np.bincount(bin_of, weights=p, minlength=n_bins) / count
        frac_pos = np.bincount(bin_of, weights=y, minlength=n_bins) / count
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "bin_mid": (edges[:-1] + edges[1:]) / 2,
        "mean_pred": mean_pred,
        "frac_pos": frac_pos,
        "count": count,
    }


def reliability_bins(
    y_true: object, y_prob: object, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> list[dict[str, np.ndarray]]:
    """Per class: bin edges and mid, mean predicted probability, fraction positive, count.

    Unknown labels are left out for that class. With ``quantile`` the edges come from that
    class's own probabilities, so bins hold (roughly) equal numbers of cases.
    """
    labels, probs = _check(y_true, y_prob, n_bins, strategy)
    return [
        _bins_one_class(labels[:, c], probs[:, c], int(n_bins), strategy)
        for c in range(labels.shape[1])
    ]


def expected_calibration_error(
    y_true: object, y_prob: object, n_bins: int = 10, strategy: BinStrategy = "uniform"
) -> np.ndarray:
    """Per-class ECE (C,): sum over bins of (share of cases) x |fraction positive - mean probability|.

    NaN for a class with no known labels.
    """
    out = []
    for bins in reliability_bins(y_true, y_prob, n_bins, strategy):
        total = bins["count"].sum()
        filled = bins["count"] > 0
        gap = np.abs(bins["frac_pos"][filled] - bins["mean_pred"][filled])
        out.append(float(np.sum(gap * bins["count"][filled]) / total) if total else np.nan)
    return np.asarray(out, dtype=np.float64)


def brier_score(y_true: object, y_prob: object) -> np.ndarray:
    """Per-class Brier score (C,): mean of (probability - label)^2 over the known labels.

    Equals ``sklearn.metrics.brier_score_loss`` per class; NaN for a class with no known label.
    Unlike AUROC it punishes confident wrong probabilities, so it moves with calibration.
    """
    labels, probs = _check(y_true, y_prob, 1, "uniform")
    known = ~np.isnan(labels)
    squared = np.where(known, (probs - np.nan_to_num(labels)) ** 2, 0.0)
    n_known = known.sum(axis=0)
    out = np.full(labels.shape[1], np.nan)
    np.divide(squared.sum(axis=0), n_known, out=out, where=n_known > 0)
    return out
