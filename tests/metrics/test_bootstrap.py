"""Bootstrap intervals: equal to re-running the metric on resampled data, seeded, patient-level."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    f1_score,
    precision_score,
    roc_auc_score,
)

from cxr_core.metrics import (
    MetricInputError,
    average_precision,
    bootstrap_ci,
    bootstrap_cis,
    confusion_counts,
    resample_weights,
    roc_auc,
    threshold_metrics,
)


def random_case(seed: int, n: int = 600, n_classes: int = 3, decimals: int | None = 2):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_classes)) < 0.25).astype(float)
    scores = rng.random((n, n_classes)) + 0.5 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels[rng.random((n, n_classes)) < 0.05] = np.nan
    return labels, scores


def sklearn_per_class(metric):
    def statistic(labels, scores):
        out = []
        for c in range(labels.shape[1]):
            known = ~np.isnan(labels[:, c])
            y = labels[known, c]
            out.append(metric(y, scores[known, c]) if 0 < y.sum() < y.size else np.nan)
        return np.array(out)

    return statistic


@pytest.mark.parametrize("groups", [None, "patients"])
def test_vectorised_distributions_equal_sklearn_on_resampled_data(groups):
    labels, scores = random_case(1, n=300)
    ids = np.random.default_rng(0).integers(0, 120, 300) if groups else None
    fast = bootstrap_cis(
        labels, scores, ["auroc", "average_precision"], groups=ids, n_boot=25, seed=4
    )
    slow_auc = bootstrap_ci(
        labels, scores, sklearn_per_class(roc_auc_score), groups=ids, n_boot=25, seed=4
    )
    slow_ap = bootstrap_ci(
        labels, scores, sklearn_per_class(average_precision_score), groups=ids, n_boot=25, seed=4
    )
    np.testing.assert_allclose(fast["auroc"].distribution, slow_auc.distribution, atol=1e-10)
    np.testing.assert_allclose(
        fast["average_precision"].distribution, slow_ap.distribution, atol=1e-10
    )


def test_threshold_statistics_equal_direct_computation():
    labels, scores = random_case(2, n=300)
    thresholds = [0.5, 0.6, 0.7]
    names = ["sensitivity", "specificity", "ppv", "npv", "f1", "accuracy"]
    fast = bootstrap_cis(labels, scores, names, thresholds=thresholds, n_boot=20, seed=1)
    for name in names:
        slow = bootstrap_ci(
            labels,
            scores,
            lambda y, s, name=name: threshold_metrics(confusion_counts(y, s, thresholds))[name],
            n_boot=20,
            seed=1,
        )
        np.testing.assert_allclose(fast[name].distribution, slow.distribution, atol=1e-12)


def test_interval_contains_estimate_and_is_seeded():
    labels, scores = random_case(3, n=2000, decimals=None)
    low, high = bootstrap_ci(labels, scores, "auroc", n_boot=300, seed=7)
    point = roc_auc(labels, scores)
    assert np.all(low < point) and np.all(point < high)
    again = bootstrap_ci(labels, scores, "auroc", n_boot=300, seed=7)
    np.testing.assert_array_equal(
        again.distribution, bootstrap_ci(labels, scores, "auroc", n_boot=300, seed=7).distribution
    )
    other = bootstrap_ci(labels, scores, "auroc", n_boot=300, seed=8)
    assert not np.array_equal(other.low, again.low)
    ap_low, ap_high = bootstrap_ci(labels, scores, "average_precision", n_boot=300, seed=7)
    assert np.all(ap_low < average_precision(labels, scores)) and np.all(
        average_precision(labels, scores) < ap_high
    )
    assert again.alpha == 0.05 and again.n_boot == 300 and again.seed == 7


def test_more_data_gives_narrower_intervals():
    small = bootstrap_ci(*random_case(5, n=300), "auroc", n_boot=200)
    large = bootstrap_ci(*random_case(5, n=3000), "auroc", n_boot=200)
    assert np.all((large.high - large.low) < (small.high - small.low))


def test_patient_grouping_resamples_patients_not_images():
    """Every patient imaged three times: grouping by patient must undo the triplication."""
    labels, scores = random_case(6, n=400)
    copies = 3
    triple_labels, triple_scores = (
        np.repeat(labels, copies, axis=0),
        np.repeat(scores, copies, axis=0),
    )
    patients = np.repeat([f"p{i:04d}" for i in range(400)], copies)
    by_patient = bootstrap_ci(
        triple_labels, triple_scores, "auroc", groups=patients, n_boot=200, seed=3
    )
    original = bootstrap_ci(labels, scores, "auroc", n_boot=200, seed=3)
    np.testing.assert_allclose(by_patient.distribution, original.distribution, atol=1e-12)
    by_image = bootstrap_ci(triple_labels, triple_scores, "auroc", n_boot=200, seed=3)
    assert np.all((by_image.high - by_image.low) < 0.75 * (by_patient.high - by_patient.low))


def test_resample_weights_draw_whole_patients():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for weights in resample_weights(6, groups, n_boot=50, seed=0):
        assert np.all(weights[:, 0] == weights[:, 1])
        assert np.all(weights[:, 3] == weights[:, 5])
        np.testing.assert_array_equal(weights[:, [0, 2, 3]].sum(axis=1), 3)


def test_resamples_without_positives_are_skipped_and_counted():
    rng = np.random.default_rng(0)
    labels = np.zeros((60, 1))
    labels[:2] = 1
    scores = rng.random((60, 1))
    result = bootstrap_ci(labels, scores, "auroc", n_boot=200, seed=0)
    assert 100 < result.n_used[0] < 200
    assert np.isnan(result.distribution[:, 0]).sum() == 200 - result.n_used[0]
    none = bootstrap_ci(np.zeros((20, 1)), scores[:20], "auroc", n_boot=10)
    assert none.n_used[0] == 0 and np.isnan(none.low[0]) and np.isnan(none.high[0])


def test_bad_arguments_raise():
    labels, scores = random_case(0, n=50)
    with pytest.raises(MetricInputError, match="one patient ID per case"):
        bootstrap_ci(labels, scores, "auroc", groups=["a"] * 49, n_boot=5)
    with pytest.raises(MetricInputError, match="patient ID is missing for row 3"):
        bootstrap_ci(labels, scores, "auroc", groups=["a"] * 3 + [None] + ["b"] * 46, n_boot=5)
    with pytest.raises(MetricInputError, match="need either thresholds or decisions"):
        bootstrap_ci(labels, scores, "sensitivity", n_boot=5)
    with pytest.raises(MetricInputError, match="not both"):
        bootstrap_ci(
            labels, scores, "sensitivity", thresholds=0.5, decisions=scores >= 0.5, n_boot=5
        )
    with pytest.raises(MetricInputError, match="decisions have shape"):
        bootstrap_ci(labels, scores, "f1", decisions=np.ones((50, 2), dtype=bool), n_boot=5)
    with pytest.raises(MetricInputError, match="unknown bootstrap statistic"):
        bootstrap_ci(labels, scores, "auprc", n_boot=5)
    with pytest.raises(MetricInputError, match="alpha"):
        bootstrap_ci(labels, scores, "auroc", n_boot=5, alpha=5)


def test_ppv_npv_f1_from_decisions_equal_sklearn_on_resampled_patients():
    labels, scores = random_case(7, n=300)
    rng = np.random.default_rng(2)
    called = rng.random(labels.shape) < 0.3  # calls no single threshold describes
    ids = rng.integers(0, 100, 300).astype(str)
    fast = bootstrap_cis(
        labels, scores, ["ppv", "npv", "f1"], decisions=called, groups=ids, n_boot=30, seed=5
    )
    metrics = {
        "ppv": lambda y, c: precision_score(y, c, zero_division=np.nan),
        "npv": lambda y, c: precision_score(1 - y, ~c, zero_division=np.nan),
        "f1": lambda y, c: f1_score(y, c, zero_division=np.nan),
    }
    for name, metric in metrics.items():
        # The same resamples of the rows, with the calls passed as 0/1 scores so they are resampled too.
        slow = bootstrap_ci(
            labels,
            called.astype(float),
            sklearn_per_class(lambda y, s, metric=metric: metric(y, s > 0.5)),
            groups=ids,
            n_boot=30,
            seed=5,
        )
        np.testing.assert_allclose(fast[name].distribution, slow.distribution, atol=1e-12)


def test_brier_distribution_equals_sklearn_on_resampled_data():
    labels, scores = random_case(8, n=200, decimals=None)
    probs = scores / scores.max()
    ids = np.random.default_rng(3).integers(0, 80, 200)
    fast = bootstrap_ci(labels, probs, "brier", groups=ids, n_boot=25, seed=2)
    slow = bootstrap_ci(
        labels, probs, sklearn_per_class(brier_score_loss), groups=ids, n_boot=25, seed=2
    )
    np.testing.assert_allclose(fast.distribution, slow.distribution, atol=1e-12)


def test_ranking_resamples_are_exact_in_float32_and_bounded_in_memory():
    """Case weights and their running totals are whole numbers: float32 holds them exactly below
    2**24, so AUROC/AP resamples equal the float64 ones bit for bit at half the memory."""
    from cxr_core.metrics import bootstrap as bs

    rng = np.random.default_rng(3)
    n = 300_000
    labels = (rng.random((n, 3)) < 0.1).astype(float)
    labels[rng.random((n, 3)) < 0.02] = np.nan
    scores = np.round(rng.random((n, 3)) * 0.5 + np.nan_to_num(labels) * 0.3, 3)
    inverse, n_units = bs.group_index(rng.integers(0, n // 3, n).astype(str), n)
    assert bs._weight_dtype(inverse, n_units) is np.float32
    assert bs._weight_dtype(None, 2**24) is np.float64  # totals could pass 2**24
    rankings = bs._class_rankings(labels, scores)
    weights = next(bs._unit_draws(n_units, n, 1000, seed=0))
    wanted = {bs.AUROC, bs.AVERAGE_PRECISION}
    tracemalloc.start()
    try:
        single = bs._ranking_values(weights, inverse, rankings, wanted, np.float32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    double = bs._ranking_values(weights, inverse, rankings, wanted, np.float64)
    for name in wanted:
        np.testing.assert_array_equal(single[name], double[name])
    # one chunk's (cases x resamples) weights and the negatives' running totals in float32, and
    # float64 only at the positives: 3.4 float32 chunks (5.7 with float64 copies of each)
    assert peak <= 4 * bs._CHUNK_ELEMENTS * 4
