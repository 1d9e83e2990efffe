"""Reliability bins against sklearn's calibration_curve; ECE against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from cxr_core.metrics import (
    MetricInputError,
    brier_score,
    expected_calibration_error,
    reliability_bins,
)


def test_ece_hand_computed():
    # Two bins split at 0.5. Lower: probs .05 .15 .35 .45 (mean .25), labels 0 0 1 1 (frac .5) -> gap .25.
    # Upper: probs .55 .85 .95 (mean 2.35/3), labels 1 1 1 (frac 1) -> gap .65/3.
    # ECE = 4/7 * .25 + 3/7 * .65/3 = 1.65/7.
    probs = np.array([0.05, 0.15, 0.35, 0.45, 0.55, 0.85, 0.95])
    labels = np.array([0, 0, 1, 1, 1, 1, 1.0])
    assert expected_calibration_error(labels, probs, n_bins=2)[0] == pytest.approx(1.65 / 7)
    bins = reliability_bins(labels, probs, n_bins=2)[0]
    np.testing.assert_allclose(bins["mean_pred"], [0.25, 2.35 / 3])
    np.testing.assert_allclose(bins["frac_pos"], [0.5, 1.0])
    np.testing.assert_array_equal(bins["count"], [4, 3])
    np.testing.assert_allclose(bins["bin_mid"], [0.25, 0.75])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_bins_equal_sklearn_calibration_curve(seed, strategy):
    rng = np.random.default_rng(seed)
    probs = np.round(rng.beta(0.7, 2.0, (500, 3)), 2)  # skewed, with ties and exact edges
    labels = (rng.random((500, 3)) < probs).astype(float)
    labels[rng.random((500, 3)) < 0.1] = np.nan
    out = reliability_bins(labels, probs, n_bins=8, strategy=strategy)
    for c in range(3):
        known = ~np.isnan(labels[:, c])
        frac, mean = calibration_curve(
            labels[known, c], probs[known, c], n_bins=8, strategy=strategy
        )
        filled = out[c]["count"] > 0
        np.testing.assert_allclose(out[c]["frac_pos"][filled], frac, atol=1e-12)
        np.testing.assert_allclose(out[c]["mean_pred"][filled], mean, atol=1e-12)
        assert out[c]["count"].sum() == known.sum()
        assert np.isnan(out[c]["mean_pred"][~filled]).all()


def test_probability_on_an_inner_edge_falls_in_the_lower_bin():
    bins = reliability_bins([1.0, 0.0], [0.5, 0.6], n_bins=2)[0]
    np.testing.assert_array_equal(bins["count"], [1, 1])


def test_well_calibrated_model_has_small_ece_and_overconfident_large():
    rng = np.random.default_rng(0)
    probs = rng.random((20000, 1))
    labels = (rng.random((20000, 1)) < probs).astype(float)
    assert expected_calibration_error(labels, probs)[0] < 0.02
    assert expected_calibration_error(labels, probs**3)[0] > 0.1


def test_class_without_known_labels_is_nan_and_bad_input_raises():
    assert np.isnan(expected_calibration_error([[np.nan], [np.nan]], [[0.2], [0.4]])[0])
    with pytest.raises(MetricInputError, match=r"probabilities in \[0, 1\].*row 1"):
        expected_calibration_error([1.0, 0.0], [0.3, 1.7])
    with pytest.raises(MetricInputError, match="binning strategy"):
        reliability_bins([1.0], [0.3], strategy="kmeans")


def test_brier_score_equals_sklearn_per_class():
    rng = np.random.default_rng(3)
    labels = (rng.random((200, 3)) < [0.1, 0.4, 0.7]).astype(float)
    probs = np.clip(0.6 * labels + rng.random((200, 3)) * 0.5, 0, 1)
    labels[rng.random((200, 3)) < 0.1] = np.nan
    labels[:, 2] = np.nan  # no known labels at all
    got = brier_score(labels, probs)
    for c in range(2):
        known = ~np.isnan(labels[:, c])
        assert got[c] == pytest.approx(
            brier_score_loss(labels[known, c], probs[known, c]), abs=1e-12
        )
    assert np.isnan(got[2])
