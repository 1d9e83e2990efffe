"""Threshold selection: the stated guarantees hold and the choice is the best such threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve
from sklearn.metrics import roc_curve as sk_roc_curve

from cxr_core.errors import ConfigError
from cxr_core.metrics import (
    EDGE_MARGIN,
    METHOD_LABELS,
    THRESHOLD_METHODS,
    MetricInputError,
    ThresholdSpec,
    confusion_counts,
    parse_threshold_spec,
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
    return threshold_metrics(confusion_counts(labels[known, c], scores[known, c], threshold))[name][
        0
    ]


def known_scores(labels, scores, c):
    return np.unique(scores[~np.isnan(labels[:, c]), c])


def observed(scores, c, threshold):
    """The lowest score of class c called positive at ``threshold``: the ROC point chosen."""
    called = scores[scores[:, c] >= threshold, c]
    return called.min() if called.size else np.inf


def assert_midway(scores, c, threshold):
    """``threshold`` lies halfway between the highest score called negative and the lowest called positive."""
    column = np.unique(scores[:, c])
    below, above = column[column < threshold], column[column >= threshold]
    if below.size and above.size:
        assert threshold == pytest.approx((below[-1] + above[0]) / 2, abs=1e-15)
    elif above.size:
        assert threshold == above[0] - EDGE_MARGIN
    else:
        assert threshold == below[-1] + EDGE_MARGIN


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.95, 1.0])
def test_sensitivity_target_is_met_at_the_highest_possible_threshold(seed, target):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "sensitivity", target)
    for c in range(labels.shape[1]):
        assert_midway(scores, c, chosen[c])
        assert observed(scores, c, chosen[c]) in known_scores(labels, scores, c)
        assert metric_at(labels, scores, c, chosen[c], "sensitivity") >= target
        higher = known_scores(labels, scores, c)
        higher = higher[higher > chosen[c]]
        if higher.size > 1:  # higher[0] is the chosen point; the next one must miss the target
            assert metric_at(labels, scores, c, higher[1], "sensitivity") < target


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("target", [0.5, 0.9, 0.99])
def test_specificity_target_is_met_at_the_lowest_possible_threshold(seed, target):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "specificity", target)
    for c in range(labels.shape[1]):
        assert_midway(scores, c, chosen[c])
        assert metric_at(labels, scores, c, chosen[c], "specificity") >= target
        lower = known_scores(labels, scores, c)
        lower = lower[lower < chosen[c]]
        if lower.size:
            assert metric_at(labels, scores, c, lower[-1], "specificity") < target


def test_full_specificity_above_a_top_scored_negative_calls_nothing_positive():
    labels, scores = np.array([1, 0, 1, 0.0]), np.array([0.3, 0.9, 0.6, 0.1])
    chosen = select_thresholds(labels, scores, "specificity", 1.0)[0]
    assert chosen == 0.9 + EDGE_MARGIN
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
        best = thr[
            np.nonzero(np.isclose(f1, f1.max(), rtol=0, atol=1e-12))[0][-1]
        ]  # highest among equals
        assert observed(scores, c, chosen[c]) == best
        assert_midway(scores, c, chosen[c])
        assert metric_at(labels, scores, c, chosen[c], "f1") == pytest.approx(f1.max())


@pytest.mark.parametrize("seed", range(4))
def test_youden_matches_sklearn_roc_argmax(seed):
    labels, scores = random_case(seed)
    chosen = select_thresholds(labels, scores, "youden")
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        fpr, tpr, thr = sk_roc_curve(labels[known, c], scores[known, c], drop_intermediate=False)
        assert (
            observed(scores, c, chosen[c]) == thr[np.argmax(tpr - fpr)]
        )  # thresholds descend: first max is highest
        assert_midway(scores, c, chosen[c])


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
    # 0.6 is the lowest known positive; the unknown case at 0.4 is the neighbour below it.
    assert select_thresholds(labels, scores, "sensitivity", 1.0)[0] == pytest.approx(0.5)


def test_fixed_and_validation():
    labels, scores = random_case(0)
    np.testing.assert_array_equal(select_thresholds(labels, scores, "fixed", 0.3), [0.3, 0.3, 0.3])
    np.testing.assert_array_equal(
        select_thresholds(labels, scores, "fixed", [0.1, 0.2, 0.3]), [0.1, 0.2, 0.3]
    )
    with pytest.raises(MetricInputError, match="unknown threshold method"):
        select_thresholds(labels, scores, "median")
    with pytest.raises(MetricInputError, match="needs a value"):
        select_thresholds(labels, scores, "sensitivity")
    with pytest.raises(MetricInputError, match="between 0 and 1"):
        select_thresholds(labels, scores, "specificity", 90)
    assert set(METHOD_LABELS) == set(THRESHOLD_METHODS)


METHOD_VALUES = [("max_f1", None), ("youden", None), ("sensitivity", 0.8), ("specificity", 0.9)]


@pytest.mark.parametrize(("method", "value"), METHOD_VALUES)
@pytest.mark.parametrize("seed", range(3))
def test_noise_does_not_flip_decisions_at_the_midpoint(method, value, seed):
    rng = np.random.default_rng(seed)
    n = 400
    labels = (rng.random((n, 2)) < 0.3).astype(float)
    # Distinct scores at least 1e-4 apart, as model outputs are, then 1e-6 of kernel noise.
    scores = (rng.permutation(n * 2).reshape(n, 2) * 1e-4 + 0.2 * labels).round(6)
    noisy = scores + rng.uniform(-1e-6, 1e-6, scores.shape)
    chosen = select_thresholds(labels, scores, method, value)
    np.testing.assert_array_equal(noisy >= chosen, scores >= chosen)
    # The same decisions as the observed score itself, which noise does flip.
    at_score = np.array([observed(scores, c, chosen[c]) for c in range(2)])
    np.testing.assert_array_equal(scores >= chosen, scores >= at_score)
    # Nudging the cases at the chosen scores down by 1e-6 flips them there, not at the midpoint.
    nudged = scores - 1e-6 * (scores == at_score)
    assert ((nudged >= at_score) != (scores >= at_score)).sum() == 2
    np.testing.assert_array_equal(nudged >= chosen, scores >= chosen)


def test_everything_called_positive_sits_below_the_lowest_score():
    labels, scores = np.array([1, 1, 0.0]), np.array([0.2, 0.5, 0.9])
    chosen = select_thresholds(labels, scores, "sensitivity", 1.0)[0]
    assert chosen == 0.2 - EDGE_MARGIN and confusion_counts(labels, scores, chosen)["tp"][0] == 2


def test_adjacent_floats_keep_the_positive_score():
    low = 0.5
    high = np.nextafter(low, 1.0)
    labels, scores = np.array([0, 1.0]), np.array([low, high])
    chosen = select_thresholds(labels, scores, "max_f1")[0]
    assert chosen == high and confusion_counts(labels, scores, chosen)["tp"][0] == 1


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("max_f1", ThresholdSpec("max_f1")),
        (" Youden ", ThresholdSpec("youden")),
        ("sensitivity=0.9", ThresholdSpec("sensitivity", 0.9)),
        ("specificity = 0.95", ThresholdSpec("specificity", 0.95)),
        ("fixed=0.35", ThresholdSpec("fixed", 0.35)),
    ],
)
def test_parse_threshold_spec(text, spec):
    parsed = parse_threshold_spec(text)
    assert parsed == spec
    assert parse_threshold_spec(str(parsed)) == parsed
    assert parse_threshold_spec(parsed) is parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be a text"),
        ("median", "unknown threshold rule 'median'"),
        ("max_f1=0.3", "takes no value"),
        ("sensitivity", "needs a value"),
        ("sensitivity=", "needs a value"),
        ("sensitivity=high", "not a number"),
        ("sensitivity=90", "between 0 and 1"),
        ("specificity=-0.1", "between 0 and 1"),
        ("fixed=nan", "finite"),
    ],
)
def test_bad_threshold_specs(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_threshold_spec(text)


def test_spec_selects_like_select_thresholds():
    labels, scores = random_case(1)
    np.testing.assert_array_equal(
        parse_threshold_spec("specificity=0.9").select(labels, scores),
        select_thresholds(labels, scores, "specificity", 0.9),
    )
