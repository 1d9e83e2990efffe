"""Two sets of scores (or of labels) on the same cases: differences with paired intervals and tests.

Comparing two models evaluated on the same images, or one model scored against two label
sources, must use the pairing: both numbers move together with the cases drawn, so intervals of
each alone overlap far more than the difference's interval does.

* :func:`paired_bootstrap`: both statistics on the same patient-level resamples (the bootstrap's
  weights depend only on the number of cases, the patients and the seed, so two calls of
  :func:`~cxr_core.metrics.bootstrap.bootstrap_cis` with the same ``groups`` and ``seed`` resample
  identically), the difference taken per resample and its percentile interval reported.
* :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988) for two correlated AUROCs, computed
  from midranks as in Sun & Xu (2014). It treats images as independent; the paired patient-level
  bootstrap is the interval that respects patients.
* :func:`mcnemar_tests`: McNemar's test (statsmodels) of the two sets of calls at their operating
  points, separately on the known positives (a difference in sensitivity) and on the known
  negatives (specificity); exact binomial when fewer than :data:`MCNEMAR_EXACT_BELOW` calls differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata
from statsmodels.stats.contingency_tables import mcnemar

from cxr_core.metrics._inputs import MetricInputError, check_labels, check_pair
from cxr_core.metrics.bootstrap import (
    AUROC,
    AVERAGE_PRECISION,
    RANKING_STATISTICS,
    THRESHOLD_STATISTICS,
    bootstrap_cis,
)
from cxr_core.metrics.confusion import check_decisions, decision_counts, threshold_metrics
from cxr_core.metrics.ranking import ranking_metrics

MCNEMAR_EXACT_BELOW = 25
"""Discordant pairs under which McNemar's test is the exact binomial one (the chi-square
approximation, with continuity correction, is poor for few discordant pairs)."""


@dataclass(frozen=True)
class PairedDifference:
    """One statistic of two paired sets, per class: each value with its own interval
    (``first_low`` ...), ``first - second`` and the difference's interval (``low``/``high``).

    ``n_used`` counts the resamples where both were defined; ``low``/``high`` are NaN when none was.
    """

    first: np.ndarray
    second: np.ndarray
    difference: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n_used: np.ndarray
    first_low: np.ndarray
    first_high: np.ndarray
    second_low: np.ndarray
    second_high: np.ndarray


def _points(
    labels: np.ndarray, scores: np.ndarray, decisions: np.ndarray | None
) -> dict[str, np.ndarray]:
    auroc, ap = ranking_metrics(labels, scores)
    out = {AUROC: auroc, AVERAGE_PRECISION: ap}
    if decisions is not None:
        out.update(threshold_metrics(decision_counts(labels, decisions)))
    return out


def _interval(distribution: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    n_classes = distribution.shape[1]
    low, high = np.full(n_classes, np.nan), np.full(n_classes, np.nan)
    used = np.sum(np.isfinite(distribution), axis=0)
    for c in np.nonzero(used)[0]:
        column = distribution[np.isfinite(distribution[:, c]), c]
        low[c], high[c] = np.percentile(column, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return low, high, used


def paired_bootstrap(
    first: tuple[object, object],
    second: tuple[object, object],
    statistics: Sequence[str],
    *,
    decisions: tuple[object, object] | None = None,
    groups: object = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, PairedDifference]:
    """``first - second`` for each named statistic, with a paired percentile interval per class.

    ``first`` and ``second`` are ``(y_true, y_score)`` pairs over the same cases in the same
    order: two models' scores with the same labels, or one model's scores with two label
    sources. Threshold statistics (sensitivity, specificity, ...) need ``decisions``, the two
    (N, C) boolean call arrays. ``groups`` (patient IDs) resample patients.
    """
    labels_a, scores_a = check_pair(*first)
    labels_b, scores_b = check_pair(*second)
    if labels_a.shape != labels_b.shape:
        raise MetricInputError(
            f"paired statistics need the same cases and classes on both sides; got {labels_a.shape} "
            f"and {labels_b.shape}"
        )
    unknown = [s for s in statistics if s not in RANKING_STATISTICS + THRESHOLD_STATISTICS]
    if unknown:
        raise MetricInputError(f"no paired bootstrap for {unknown}")
    wanted_calls = [s for s in statistics if s in THRESHOLD_STATISTICS]
    if wanted_calls and decisions is None:
        raise MetricInputError(f"{', '.join(wanted_calls)} need both sides' decisions")
    calls = [None, None]
    if decisions is not None:
        calls = [check_decisions(d, *labels_a.shape) for d in decisions]
    settings = {"groups": groups, "n_boot": int(n_boot), "seed": int(seed), "alpha": alpha}
    boot = [
        bootstrap_cis(labels, scores, statistics, decisions=called, **settings)
        for labels, scores, called in (
            (labels_a, scores_a, calls[0]),
            (labels_b, scores_b, calls[1]),
        )
    ]
    point_a = _points(labels_a, scores_a, calls[0])
    point_b = _points(labels_b, scores_b, calls[1])
    out = {}
    for name in statistics:
        low, high, used = _interval(boot[0][name].distribution - boot[1][name].distribution, alpha)
        out[name] = PairedDifference(
            point_a[name],
            point_b[name],
            point_a[name] - point_b[name],
            low,
            high,
            used,
            boot[0][name].low,
            boot[0][name].high,
            boot[1][name].low,
            boot[1][name].high,
        )
    return out


@dataclass(frozen=True)
class DeLongResult:
    """Per class: both AUROCs, their difference (first - second), its standard error, z and the
    two-sided p-value, and the normal-approximation interval of the difference."""

    auroc_first: np.ndarray
    auroc_second: np.ndarray
    difference: np.ndarray
    se: np.ndarray
    z: np.ndarray
    p_value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def delong_placements(positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, ...]:
    """(AUROC, V10, V01) of one score set: each positive's share of negatives scored below it
    (ties count half) and each negative's share of positives scored above it, from midranks."""
    m, n = positives.size, negatives.size
    together = rankdata(np.concatenate([positives, negatives]))
    v10 = (together[:m] - rankdata(positives)) / n
    v01 = 1.0 - (together[m:] - rankdata(negatives)) / m
    return float(v10.mean()), v10, v01


def _delong_one_class(
    labels: np.ndarray, first: np.ndarray, second: np.ndarray, alpha: float
) -> tuple[float, ...]:
    known = ~np.isnan(labels)
    pos, neg = known & (labels == 1), known & (labels == 0)
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        return (np.nan,) * 8
    a1, x1, y1 = delong_placements(first[pos], first[neg])
    a2, x2, y2 = delong_placements(second[pos], second[neg])
    s10, s01 = np.cov(np.stack([x1, x2])), np.cov(np.stack([y1, y2]))
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (
        s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]
    ) / n
    diff = a1 - a2
    se = float(np.sqrt(max(variance, 0.0)))
    if se == 0.0:  # identical rankings: no evidence of any difference
        return a1, a2, diff, 0.0, 0.0, 1.0, diff, diff
    z = diff / se
    half = norm.ppf(1 - alpha / 2) * se
    return a1, a2, diff, se, z, float(2 * norm.sf(abs(z))), diff - half, diff + half


def delong_test(
    y_true: object, score_first: object, score_second: object, alpha: float = 0.05
) -> DeLongResult:
    """DeLong's test of AUROC(first) = AUROC(second) per class, on the same cases.

    Unknown labels (NaN) are left out per class; a class with fewer than two known positives
    or negatives gets NaN throughout.
    """
    labels, first = check_pair(y_true, score_first)
    _, second = check_pair(labels, score_second)
    rows = [
        _delong_one_class(labels[:, c], first[:, c], second[:, c], alpha)
        for c in range(labels.shape[1])
    ]
    columns = np.array(rows, dtype=np.float64).T
    return DeLongResult(*columns)


@dataclass(frozen=True)
class McNemarResult:
    """One class's McNemar test among the known positives or negatives: how many cases only the
    first or only the second set got right, the statistic, p-value and which test was used."""

    only_first: int
    only_second: int
    statistic: float
    p_value: float
    method: str


def _mcnemar(correct_first: np.ndarray, correct_second: np.ndarray) -> McNemarResult:
    both = int(np.sum(correct_first & correct_second))
    only_first = int(np.sum(correct_first & ~correct_second))
    only_second = int(np.sum(~correct_first & correct_second))
    neither = int(np.sum(~correct_first & ~correct_second))
    if only_first + only_second == 0:
        return McNemarResult(0, 0, 0.0, 1.0, "no discordant cases")
    exact = only_first + only_second < MCNEMAR_EXACT_BELOW
    result = mcnemar([[both, only_first], [only_second, neither]], exact=exact, correction=True)
    method = "exact binomial" if exact else "chi-square, continuity-corrected"
    return McNemarResult(
        only_first, only_second, float(result.statistic), float(result.pvalue), method
    )


def mcnemar_tests(
    y_true: object, decisions_first: object, decisions_second: object
) -> list[dict[str, McNemarResult]]:
    """Per class ``{"sensitivity": ..., "specificity": ...}``: McNemar on the known positives
    (called positive = right) and on the known negatives (called negative = right)."""
    labels = check_labels(y_true)
    first = check_decisions(decisions_first, *labels.shape)
    second = check_decisions(decisions_second, *labels.shape)
    out = []
    for c in range(labels.shape[1]):
        pos, neg = labels[:, c] == 1, labels[:, c] == 0
        out.append(
            {
                "sensitivity": _mcnemar(first[pos, c], second[pos, c]),
                "specificity": _mcnemar(~first[neg, c], ~second[neg, c]),
            }
        )
    return out
