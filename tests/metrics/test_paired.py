"""Paired comparisons: DeLong against an O(n^2) Mann-Whitney computation, the paired bootstrap against
a brute-force loop over the same resamples, McNemar against statsmodels on hand-counted tables."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar

from cxr_core.metrics import MetricInputError, bootstrap_ci, resample_weights
from cxr_core.metrics.paired import (
    MCNEMAR_EXACT_BELOW,
    delong_test,
    mcnemar_tests,
    paired_bootstrap,
)


def two_models(seed: int = 0, n: int = 160, classes: int = 3):
    """Labels with unknowns, and two correlated models; the second model's scores are rounded so
    that it has ties."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, classes)) < 0.3).astype(float)
    shared = rng.normal(size=(n, classes))
    first = 1.4 * labels + shared + 0.6 * rng.normal(size=(n, classes))
    second = np.round(0.9 * labels + shared + 0.8 * rng.normal(size=(n, classes)), 1)
    labels[rng.random((n, classes)) < 0.05] = np.nan
    return labels, first, second


def delong_by_kernel(labels: np.ndarray, first: np.ndarray, second: np.ndarray):
    """DeLong (1988) written out: psi(x, y) = 1, 1/2, 0 for every positive/negative pair."""
    known = ~np.isnan(labels)
    pos, neg = known & (labels == 1), known & (labels == 0)
    placements = []
    for scores in (first, second):
        x, y = scores[pos], scores[neg]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        placements.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (a1, v10_1, v01_1), (a2, v10_2, v01_2) = placements
    m, n = pos.sum(), neg.sum()
    s10 = np.cov(v10_1 - v10_2)  # var of the difference of placements = var1 + var2 - 2 cov
    s01 = np.cov(v01_1 - v01_2)
    se = np.sqrt(s10 / m + s01 / n)
    z = (a1 - a2) / se
    return a1, a2, z, 2 * norm.sf(abs(z)), se


def test_delong_equals_the_quadratic_mann_whitney_computation():
    labels, first, second = two_models()
    result = delong_test(labels, first, second)
    for c in range(labels.shape[1]):
        a1, a2, z, p, se = delong_by_kernel(labels[:, c], first[:, c], second[:, c])
        assert result.auroc_first[c] == pytest.approx(a1, abs=1e-12)
        assert result.auroc_second[c] == pytest.approx(a2, abs=1e-12)
        assert result.se[c] == pytest.approx(se, rel=1e-10)
        assert result.z[c] == pytest.approx(z, rel=1e-10)
        assert result.p_value[c] == pytest.approx(p, rel=1e-9)
        half = norm.ppf(0.975) * se
        assert (result.low[c], result.high[c]) == pytest.approx((a1 - a2 - half, a1 - a2 + half))
        known = ~np.isnan(labels[:, c])
        assert a1 == pytest.approx(roc_auc_score(labels[known, c], first[known, c]))


def test_delong_of_identical_scores_finds_no_difference_and_refuses_tiny_classes():
    labels, first, _ = two_models(1)
    result = delong_test(labels, first, first)
    assert np.all(result.z == 0) and np.all(result.p_value == 1) and np.all(result.se == 0)
    tiny = np.array([1.0, 0, 0, 0])
    assert np.isnan(delong_test(tiny, [0.9, 0.1, 0.2, 0.3], [0.8, 0.2, 0.1, 0.3]).z[0])


def brute_force_difference(labels, first, second, groups, n_boot, seed, statistic):
    """The same resamples drawn one at a time, each statistic computed by scikit-learn."""
    rows = np.arange(len(labels))
    out = []
    for chunk in resample_weights(len(labels), groups, n_boot=n_boot, seed=seed):
        for weights in chunk.astype(int):
            picked = np.repeat(rows, weights)
            y = labels[picked]
            known = ~np.isnan(y)
            if len(set(y[known])) < 2:
                out.append(np.nan)
                continue
            out.append(
                statistic(y[known], first[picked][known])
                - statistic(y[known], second[picked][known])
            )
    return np.array(out)


def test_paired_bootstrap_equals_a_brute_force_loop_over_the_same_patient_resamples():
    labels, first, second = two_models(2, n=90)
    groups = (np.arange(90) // 3).astype(str)  # three images per patient
    got = paired_bootstrap(
        (labels, first), (labels, second), ["auroc"], groups=groups, n_boot=60, seed=7
    )["auroc"]
    for c in range(labels.shape[1]):
        expected = brute_force_difference(
            labels[:, c], first[:, c], second[:, c], groups, 60, 7, roc_auc_score
        )
        low, high = np.percentile(expected[np.isfinite(expected)], [2.5, 97.5])
        assert (got.low[c], got.high[c]) == pytest.approx((low, high), abs=1e-12)
        assert got.n_used[c] == np.isfinite(expected).sum()
        known = ~np.isnan(labels[:, c])
        assert got.difference[c] == pytest.approx(
            roc_auc_score(labels[known, c], first[known, c])
            - roc_auc_score(labels[known, c], second[known, c])
        )


def test_paired_sensitivity_difference_from_fixed_calls_equals_brute_force():
    labels, first, second = two_models(3, n=120)
    calls = (first > 0.8, second > 0.5)
    got = paired_bootstrap(
        (labels, first), (labels, second), ["sensitivity"], decisions=calls, n_boot=40, seed=1
    )["sensitivity"]

    def loop(c: int) -> np.ndarray:
        rows, out = np.arange(len(labels)), []
        for chunk in resample_weights(len(labels), None, n_boot=40, seed=1):
            for weights in chunk.astype(int):
                picked = np.repeat(rows, weights)
                positive = labels[picked, c] == 1
                out.append(
                    calls[0][picked, c][positive].mean() - calls[1][picked, c][positive].mean()
                )
        return np.array(out)

    for c in range(labels.shape[1]):
        low, high = np.percentile(loop(c), [2.5, 97.5])
        assert (got.low[c], got.high[c]) == pytest.approx((low, high), abs=1e-12)


def test_paired_bootstrap_with_two_label_sources_on_one_model():
    """The other use: one model, two truths. Pairing makes the difference's interval narrower than
    the two intervals would combine to if they were independent."""
    labels, first, _ = two_models(4, n=200)
    relabelled = labels.copy()
    flip = np.random.default_rng(0).random(labels.shape) < 0.08
    relabelled[flip] = 1 - relabelled[flip]
    got = paired_bootstrap((relabelled, first), (labels, first), ["auroc"], n_boot=300)["auroc"]
    intervals = [
        bootstrap_ci(y, first, "auroc", n_boot=300, seed=s)
        for y, s in ((relabelled, 1), (labels, 2))
    ]
    widths = [ci.high - ci.low for ci in intervals]
    assert np.all(got.high - got.low < np.hypot(*widths))
    assert np.all(got.low <= got.difference) and np.all(got.difference <= got.high)


def test_paired_bootstrap_refuses_unpaired_inputs():
    labels, first, second = two_models(5)
    with pytest.raises(MetricInputError, match="same cases"):
        paired_bootstrap((labels, first), (labels[:-1], second[:-1]), ["auroc"], n_boot=5)
    with pytest.raises(MetricInputError, match="decisions"):
        paired_bootstrap((labels, first), (labels, second), ["sensitivity"], n_boot=5)


def test_mcnemar_matches_statsmodels_on_hand_counted_tables():
    rng = np.random.default_rng(6)
    labels = (rng.random((400, 2)) < 0.4).astype(float)
    first = rng.random((400, 2)) < np.where(labels == 1, 0.8, 0.2)
    second = np.where(rng.random((400, 2)) < 0.7, first, ~first)
    second[:, 1] = first[:, 1]
    second[:3, 1] = ~first[:3, 1]  # few discordant cases: the exact test
    tests = mcnemar_tests(labels, first, second)
    for c in range(2):
        for name, rows, right_a, right_b in (
            ("sensitivity", labels[:, c] == 1, first[:, c], second[:, c]),
            ("specificity", labels[:, c] == 0, ~first[:, c], ~second[:, c]),
        ):
            a, b = right_a[rows], right_b[rows]
            table = [
                [int(sum(a & b)), int(sum(a & ~b))],
                [int(sum(~a & b)), int(sum(~a & ~b))],
            ]
            discordant = table[0][1] + table[1][0]
            if discordant == 0:
                assert tests[c][name].p_value == 1.0
                continue
            reference = mcnemar(table, exact=discordant < MCNEMAR_EXACT_BELOW, correction=True)
            got = tests[c][name]
            assert (got.only_first, got.only_second) == (table[0][1], table[1][0])
            assert got.p_value == pytest.approx(reference.pvalue, rel=1e-12)
            assert got.statistic == pytest.approx(reference.statistic, rel=1e-12)
    assert tests[0]["sensitivity"].method.startswith("chi-square")
    assert tests[1]["sensitivity"].method in ("exact binomial", "no discordant cases")
