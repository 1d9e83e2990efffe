"""Counts and threshold metrics against scikit-learn; the sorted fast path against the direct one."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cxr_core.metrics import (
    MetricInputError,
    SortedScores,
    balanced_accuracy,
    confusion_counts,
    confusion_matrix,
    threshold_metrics,
)


def random_case(seed: int, n: int = 300, n_classes: int = 4):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_classes)) < 0.3).astype(float)
    scores = np.round(rng.random((n, n_classes)) + 0.3 * labels, 2)
    labels[rng.random((n, n_classes)) < 0.1] = np.nan
    return labels, scores


@pytest.mark.parametrize("seed", range(4))
def test_counts_and_metrics_equal_sklearn(seed):
    labels, scores = random_case(seed)
    thresholds = np.array([0.3, 0.5, 0.71, 0.9])
    metrics = threshold_metrics(confusion_counts(labels, scores, thresholds))
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        truth, called = labels[known, c], scores[known, c] >= thresholds[c]
        tn, fp, fn, tp = sk_confusion_matrix(truth, called, labels=[0, 1]).ravel()
        assert (metrics["tp"][c], metrics["fp"][c], metrics["tn"][c], metrics["fn"][c]) == (
            tp,
            fp,
            tn,
            fn,
        )
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, called, average="binary", zero_division=np.nan
        )
        assert metrics["sensitivity"][c] == pytest.approx(recall)
        assert metrics["ppv"][c] == pytest.approx(precision, nan_ok=True)
        assert metrics["f1"][c] == pytest.approx(f1, nan_ok=True)
        assert metrics["specificity"][c] == pytest.approx(tn / (tn + fp))
        assert metrics["npv"][c] == pytest.approx(tn / (tn + fn))
        assert metrics["accuracy"][c] == pytest.approx(np.mean(truth == called))


@pytest.mark.parametrize("seed", range(3))
def test_sorted_scores_match_direct_counts_for_any_threshold(seed):
    labels, scores = random_case(seed)
    sorted_scores = SortedScores(labels, scores)
    rng = np.random.default_rng(seed + 10)
    exact = scores[rng.integers(0, scores.shape[0], 4), np.arange(4)]  # thresholds equal to scores
    for thresholds in [exact, rng.random(4), np.full(4, -1.0), np.full(4, 2.0), 0.5]:
        fast, direct = sorted_scores.at(thresholds), confusion_counts(labels, scores, thresholds)
        for name in ("tp", "fp", "tn", "fn"):
            np.testing.assert_array_equal(fast[name], direct[name])
    np.testing.assert_array_equal(
        sorted_scores.n_pos + sorted_scores.n_neg + sorted_scores.n_unknown, 300
    )
    called_all = sorted_scores.at(-1.0)
    np.testing.assert_array_equal(called_all["tp"], sorted_scores.n_pos)
    metrics = sorted_scores.metrics_at(0.5)
    np.testing.assert_array_equal(
        metrics["f1"], threshold_metrics(confusion_counts(labels, scores, 0.5))["f1"]
    )


def test_score_equal_to_threshold_is_positive():
    counts = confusion_counts([1.0, 0.0], [0.5, 0.5], 0.5)
    assert counts["tp"][0] == 1 and counts["fp"][0] == 1
    fast = SortedScores([1.0, 0.0], [0.5, 0.5]).at(0.5)
    assert fast["tp"][0] == 1 and fast["fp"][0] == 1


def test_undefined_metrics_are_nan():
    labels = np.array([[0, 1], [0, 1], [0, 0.0]])
    scores = np.array([[0.1, 0.2], [0.2, 0.3], [0.3, 0.1]])
    metrics = threshold_metrics(confusion_counts(labels, scores, [0.5, 0.5]))
    assert np.isnan(metrics["sensitivity"][0])  # no positives
    assert np.isnan(metrics["f1"][0])  # no positives and nothing called positive
    assert np.isnan(metrics["ppv"][1])  # nothing called positive
    assert metrics["specificity"][0] == 1.0 and metrics["accuracy"][1] == pytest.approx(1 / 3)


def test_nan_threshold_gives_nan_counts_not_all_negative():
    labels, scores = random_case(0)
    for counts in (
        confusion_counts(labels, scores, [0.5, np.nan, 0.5, 0.5]),
        SortedScores(labels, scores).at([0.5, np.nan, 0.5, 0.5]),
    ):
        assert np.isnan(counts["tp"][1]) and np.isnan(counts["tn"][1])
        assert not np.isnan(counts["tp"][0])


def test_threshold_count_must_match_classes():
    labels, scores = random_case(0)
    with pytest.raises(MetricInputError, match="3 thresholds for 4 classes"):
        SortedScores(labels, scores).at([0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match="lack"):
        threshold_metrics({"tp": np.ones(2)})


@pytest.mark.parametrize("seed", range(3))
def test_multiclass_matrix_and_balanced_accuracy_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth, pred = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    np.testing.assert_array_equal(
        confusion_matrix(truth, pred, 4), sk_confusion_matrix(truth, pred, labels=range(4))
    )
    assert balanced_accuracy(truth, pred, 4) == pytest.approx(balanced_accuracy_score(truth, pred))


def test_balanced_accuracy_skips_absent_classes_like_sklearn():
    truth, pred = np.array([0, 0, 1, 1, 1]), np.array([0, 2, 1, 1, 0])
    assert balanced_accuracy(truth, pred, 3) == pytest.approx((0.5 + 2 / 3) / 2)
    with pytest.warns(UserWarning):
        assert balanced_accuracy(truth, pred, 3) == pytest.approx(
            balanced_accuracy_score(truth, pred)
        )


def test_bad_class_indices_raise():
    with pytest.raises(MetricInputError, match="row 1 is class index 5"):
        confusion_matrix([0, 5], [0, 1], 3)
    with pytest.raises(MetricInputError, match="whole class indices"):
        confusion_matrix([0.5, 1], [0, 1], 3)
