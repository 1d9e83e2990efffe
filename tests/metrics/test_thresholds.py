"""Threshold selection: the stated guarantees hold and the choice is the best such threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve
from sklearn.metrics import roc_curve as sk_roc_curve

from cxr_core.metrics import (
    METHOD_LABELS,
    THRESHOLD_METHODS,
    MetricInputError,
    confusion_counts,
    select_thresholds,
    threshold_metrics,
)


def random_case(seed: int, n: int = 250, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_classes)) < 0.3).astype(float)
    scores = np.round(rng.random((n, n_classes)) + 0.4 * labels, 2)
    labels[rng.random((n, n_classes)) < 0.1] = np.nan
    return labels, scores


def metric_at(labels, scores, c, threshold, name):
    known = ~np.isnan(labels[:, c])
    return threshold_metrics(confusion_counts(labels[known, c], scores[known, c], threshold))[name][0]


def known_scores(labels, scores, c):
    return np.unique(scores[~np.isnan(labels[:, c]), c])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_sensitivity_target_is_met_at_the_highest_possible_threshold(seed, target):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "sensitivity", target)
    for c in range(labels.shape[1]):
        assert chosen[c] in known_scores(labels, scores, c)
        assert metric_at(labels, scores, c, chosen[c], "sensitivity") >= target
        higher = known_scores(labels, scores, c)
        higher = higher[higher > chosen[c]]
        if higher.size:
            assert metric_at(labels, scores, c, higher[0], "sensitivity") < target


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.5, 0.9, 0.99])
def test_specificity_target_is_met_at_the_lowest_possible_threshold(seed, target):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "specificity", target)
    for c in range(labels.shape[1]):
        assert metric_at(labels, scores, c, chosen[c], "specificity") >= target
        lower = known_scores(labels, scores, c)
        lower = lower[lower < chosen[c]]
        if lower.size:
            assert metric_at(labels, scores, c, lower[-1], "specificity") < target


def test_full_specificity_above_a_top_scored_negative_calls_nothing_positive():
    labels, scores = np.array([1, 0, 1, 0.0]), np.array([0.3, 0.9, 0.6, 0.1])
    chosen = select_thresholds(labels, scores, "specificity", 1.0)[0]
    assert chosen > 0.9 and chosen == np.nextafter(0.9, 1)
    assert confusion_counts(labels, scores, chosen)["fp"][0] == 0
    assert confusion_counts(labels, scores, chosen)["tp"][0] == 0


@pytest.mark.parametrize("seed", range(4))
def test_max_f1_is_the_best_observed_threshold(seed):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "max_f1")
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        precision, recall, thr = precision_recall_curve(labels[known, c], scores[known, c])
        with np.errstate(invalid="ignore"):
            f1 = np.nan_to_num(2 * precision[:-1] * recall[:-1] / (precision[:-1] + recall[:-1]))
        best = thr[np.nonzero(np.isclose(f1, f1.max(), rtol=0, atol=1e-12))[0][-1]]  # highest among equals
        assert chosen[c] == best
        assert metric_at(labels, scores, c, chosen[c], "f1") == pytest.approx(f1.max())


@pytest.mark.parametrize("seed", range(4))
def test_youden_matches_sklearn_roc_argmax(seed):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "youden")
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        fpr, tpr, thr = sk_roc_curve(labels[known, c], scores[known, c], drop_intermediate=False)
        assert chosen[c] == thr[np.argmax(tpr - fpr)]  # thresholds descend: first max is highest


def test_undefined_classes_get_nan():
    labels = np.array([[0, 1], [0, 1], [0, 1.0]])
    scores = np.array([[0.2, 0.3], [0.5, 0.6], [0.9, 0.1]])
    for method in ("max_f1", "youden", "sensitivity"):
        assert np.isnan(select_thresholds(labels, scores, method, 0.9)[0])
    assert not np.isnan(select_thresholds(labels, scores, "sensitivity", 0.9)[1])
    assert np.isnan(select_thresholds(labels, scores, "specificity", 0.9)[1])
    assert np.isnan(select_thresholds(labels, scores, "youden")[1])


def test_unknown_labels_do_not_supply_candidates():
    labels, scores = np.array([1, 0, np.nan, 1.0]), np.array([0.6, 0.2, 0.4, 0.8])
    assert select_thresholds(labels, scores, "sensitivity", 1.0)[0] == 0.6


def test_fixed_and_validation():
    labels, scores = random_case(0)
    np.testing.assert_array_equal(select_thresholds(labels, scores, "fixed", 0.3), [0.3, 0.3, 0.3])
    np.testing.assert_array_equal(select_thresholds(labels, scores, "fixed", [0.1, 0.2, 0.3]), [0.1, 0.2, 0.3])
    with pytest.raises(MetricInputError, match="unknown threshold method"):
        select_thresholds(labels, scores, "median")
    with pytest.raises(MetricInputError, match="needs a value"):
        select_thresholds(labels, scores, "sensitivity")
    with pytest.raises(MetricInputError, match="between 0 and 1"):
        select_thresholds(labels, scores, "specificity", 90)
    assert set(METHOD_LABELS) == set(THRESHOLD_METHODS)
