"""AUROC, AP and curves against scikit-learn, ties and unknown labels included."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.metrics import roc_curve as sk_roc_curve

from cxr_core.errors import CXRError
from cxr_core.metrics import (
    MetricInputError,
    average_precision,
    curves,
    pr_curve,
    ranking_metrics,
    roc_auc,
    roc_curve,
)


def random_case(
    seed: int, n: int = 400, n_classes: int = 5, decimals: int | None = 1, unknown: float = 0.1
):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, n_classes)) < rng.uniform(0.05, 0.5, n_classes)).astype(float)
    scores = rng.random((n, n_classes)) + 0.4 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties
    labels[rng.random((n, n_classes)) < unknown] = np.nan
    return labels, scores


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1])
def test_auroc_and_ap_equal_sklearn_per_class(seed, decimals):
    labels, scores = random_case(seed, decimals=decimals)
    auroc, ap = roc_auc(labels, scores), average_precision(labels, scores)
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        assert auroc[c] == pytest.approx(
            roc_auc_score(labels[known, c], scores[known, c]), abs=1e-10
        )
        assert ap[c] == pytest.approx(
            average_precision_score(labels[known, c], scores[known, c]), abs=1e-10
        )
    shared_auroc, shared_ap = ranking_metrics(labels, scores)
    np.testing.assert_allclose(shared_auroc, auroc, rtol=0, atol=0)
    np.testing.assert_allclose(shared_ap, ap, rtol=0, atol=0)


def test_ranking_a_large_table_needs_about_three_times_its_labels_in_memory():
    """An evaluation of a million films (and its micro average over 14 million pooled cases) ranks
    in bounded memory: counts are gathered at the positives, masks are booleans."""
    labels, scores = random_case(0, n=100_000, n_classes=14, decimals=3, unknown=0.01)
    tracemalloc.start()
    try:
        auroc, ap = ranking_metrics(labels, scores)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 3.5 * labels.nbytes  # was 11x with float64 masks and full-size gathers
    known = ~np.isnan(labels[:, 3])
    assert auroc[3] == pytest.approx(roc_auc_score(labels[known, 3], scores[known, 3]), abs=1e-10)
    assert ap[3] == pytest.approx(
        average_precision_score(labels[known, 3], scores[known, 3]), abs=1e-10
    )


def test_undefined_classes_are_nan_not_half():
    labels = np.array(
        [[1, 0, 1, np.nan], [1, 0, 0, np.nan], [1, 0, 1, np.nan], [1, 0, 0, np.nan]], dtype=float
    )
    scores = np.array(
        [[0.9, 0.1, 0.8, 0.5], [0.2, 0.3, 0.1, 0.5], [0.4, 0.6, 0.7, 0.5], [0.5, 0.2, 0.3, 0.5]]
    )
    auroc, ap = roc_auc(labels, scores), average_precision(labels, scores)
    assert np.isnan(auroc[0]) and np.isnan(auroc[1]) and np.isnan(auroc[3])
    assert auroc[2] == 1.0
    assert ap[0] == 1.0  # no negatives: every call is right, as sklearn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ap[0] == average_precision_score(labels[:, 0], scores[:, 0])
    assert np.isnan(ap[1]) and np.isnan(ap[3])


def test_single_case_and_one_dimensional_input():
    assert np.isnan(roc_auc([1.0], [0.3])[0])
    result = roc_auc(np.array([0, 1, 1, 0.0]), np.array([0.1, 0.8, 0.4, 0.5]))
    assert result.shape == (1,)
    assert result[0] == roc_auc_score([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.5])


def test_all_scores_tied():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 0.0])
    scores = np.full(8, 0.3)
    assert roc_auc(labels, scores)[0] == 0.5 == roc_auc_score(labels, scores)
    assert average_precision(labels, scores)[0] == pytest.approx(0.25)
    assert average_precision(labels, scores)[0] == pytest.approx(
        average_precision_score(labels, scores)
    )


def test_one_vs_rest_on_one_hot_matches_sklearn_multiclass():
    rng = np.random.default_rng(3)
    classes = rng.integers(0, 3, 300)
    probs = rng.dirichlet([1, 1, 1], 300) + 0.4 * np.eye(3)[classes]
    probs /= probs.sum(axis=1, keepdims=True)
    ours = roc_auc(np.eye(3)[classes], probs)
    assert ours.mean() == pytest.approx(
        roc_auc_score(classes, probs, multi_class="ovr", average="macro"), abs=1e-10
    )


@pytest.mark.parametrize("seed", range(4))
def test_curves_equal_sklearn_points(seed):
    labels, scores = random_case(seed, n=200, n_classes=2, decimals=seed % 2 + 1)
    for c in range(2):
        known = ~np.isnan(labels[:, c])
        fpr, tpr, thr = roc_curve(labels[:, c], scores[:, c])
        sk_fpr, sk_tpr, sk_thr = sk_roc_curve(
            labels[known, c], scores[known, c], drop_intermediate=False
        )
        np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
        np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
        np.testing.assert_array_equal(thr, sk_thr)
        precision, recall, pr_thr = pr_curve(labels[:, c], scores[:, c])
        sk_p, sk_r, sk_t = precision_recall_curve(labels[known, c], scores[known, c])
        np.testing.assert_allclose(precision, sk_p, atol=1e-12)
        np.testing.assert_allclose(recall, sk_r, atol=1e-12)
        np.testing.assert_array_equal(pr_thr, sk_t)


def test_curve_without_negatives_has_nan_fpr():
    fpr, tpr, _ = roc_curve([1, 1, 1.0], [0.2, 0.5, 0.9])
    assert np.isnan(fpr).all()
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
    _, recall, _ = pr_curve([0, 0.0], [0.2, 0.5])
    assert np.isnan(recall[:-1]).all()


def test_curves_downsample_but_keep_shape_and_true_thresholds():
    labels, scores = random_case(7, n=3000, n_classes=2, decimals=None, unknown=0.0)
    out = curves(labels, scores, max_points=60)
    aurocs = roc_auc(labels, scores)
    for c, entry in enumerate(out):
        roc = entry["roc"]
        assert 2 < roc["fpr"].size <= 60
        assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (
            0.0,
            0.0,
            1.0,
            1.0,
        )
        assert np.all(np.diff(roc["fpr"]) >= 0)
        area = np.sum(np.diff(roc["fpr"]) * (roc["tpr"][1:] + roc["tpr"][:-1]) / 2)
        assert area == pytest.approx(aurocs[c], abs=0.01)
        full_fpr, full_tpr, full_thr = roc_curve(labels[:, c], scores[:, c])
        where = np.searchsorted(-full_thr, -roc["thresholds"])
        np.testing.assert_array_equal(full_thr[where], roc["thresholds"])
        np.testing.assert_array_equal(full_tpr[where], roc["tpr"])
        pr = entry["pr"]
        assert pr["precision"].size <= 60
        assert pr["precision"].size == pr["recall"].size == pr["thresholds"].size
        assert pr["recall"][-1] == 0.0 and pr["thresholds"][-1] == np.inf


def test_small_curves_are_not_downsampled():
    out = curves([[1.0], [0.0], [1.0]], [[0.9], [0.2], [0.4]], max_points=200)
    assert out[0]["roc"]["fpr"].tolist() == [0.0, 0.0, 0.0, 1.0]
    assert out[0]["roc"]["tpr"].tolist() == [0.0, 0.5, 1.0, 1.0]
    assert out[0]["roc"]["thresholds"].tolist() == [np.inf, 0.9, 0.4, 0.2]


@pytest.mark.parametrize(
    "labels, scores, fragment",
    [
        ([[2.0], [0.0]], [[0.1], [0.2]], "row 0 holds 2 "),
        ([[1.0], [0.0]], [[np.nan], [0.2]], "must be finite"),
        ([[1.0], [0.0]], [[0.1, 0.2], [0.3, 0.4]], "shape"),
        (np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), "2-D"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "no cases"),
    ],
)
def test_bad_inputs_raise_actionable_errors(labels, scores, fragment):
    with pytest.raises(MetricInputError, match=fragment) as info:
        roc_auc(labels, scores)
    assert isinstance(info.value, CXRError)


def test_single_curve_rejects_several_classes():
    with pytest.raises(MetricInputError, match="curves"):
        roc_curve(np.zeros((3, 2)), np.zeros((3, 2)))
