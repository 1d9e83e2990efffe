"""Temperature scaling: the fitted T minimises the NLL (checked against a brute-force grid), out of fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, softmax
from sklearn.metrics import log_loss

from cxr_core.metrics import (
    MetricInputError,
    apply_temperature,
    brier_score,
    calibration_change,
    crossfit_temperature,
    expected_calibration_error,
    fit_temperature,
    to_logits,
)

GRID = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))  # steps of 0.15% in T


def overconfident_multilabel(seed: int = 0, n: int = 1500, factor=(3.0, 0.5, 1.0)):
    """Labels drawn from sigmoid(z); the model reports factor * z (T = factor undoes it)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    labels = (rng.random((n, 3)) < expit(z)).astype(float)
    labels[rng.random((n, 3)) < 0.05] = np.nan
    return labels, np.asarray(factor) * z


def binary_nll_grid(y, z):
    scaled = z[None, :] / GRID[:, None]
    return np.mean(np.logaddexp(0, scaled) - y * scaled, axis=1)


def multiclass_nll_grid(truth, z):
    scaled = z[None] / GRID[:, None, None]
    picked = scaled[:, np.arange(len(truth)), truth]
    return np.mean(np.logaddexp.reduce(scaled, axis=2) - picked, axis=1)


def test_multilabel_temperature_is_the_grid_minimum_of_the_nll():
    labels, logits = overconfident_multilabel()
    fitted = fit_temperature(labels, logits, "multilabel", inputs="logits")
    for c in range(3):
        known = ~np.isnan(labels[:, c])
        y, z = labels[known, c], logits[known, c]
        grid = binary_nll_grid(y, z)
        best = GRID[np.argmin(grid)]
        assert grid[np.argmin(grid)] == pytest.approx(
            log_loss(y, expit(z / best)), rel=1e-9
        )  # the grid is sklearn's NLL
        assert fitted[c] == pytest.approx(best, rel=2e-3)
        assert log_loss(y, expit(z / fitted[c])) <= log_loss(y, expit(z / best)) + 1e-9
    assert fitted == pytest.approx([3.0, 0.5, 1.0], rel=0.2)  # it undoes the distortion


def test_multiclass_temperature_is_the_grid_minimum_of_the_nll():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.2, (800, 3))
    truth = np.array([rng.choice(3, p=p) for p in softmax(z, axis=1)])
    labels = np.eye(3)[truth]
    labels[:7] = np.nan
    logits = 2.5 * z
    fitted = fit_temperature(labels, logits, "multiclass", inputs="logits")
    assert fitted.shape == (1,)
    grid = multiclass_nll_grid(truth[7:], logits[7:])
    best = GRID[np.argmin(grid)]
    assert grid.min() == pytest.approx(
        log_loss(truth[7:], softmax(logits[7:] / best, axis=1)), rel=1e-9
    )
    assert fitted[0] == pytest.approx(best, rel=2e-3)
    assert log_loss(truth[7:], softmax(logits[7:] / fitted[0], axis=1)) <= grid.min() + 1e-9
    assert fitted[0] == pytest.approx(2.5, rel=0.2)
    probs = softmax(logits, axis=1)
    assert fit_temperature(labels, probs, "multiclass")[0] == pytest.approx(fitted[0], rel=1e-4)


def test_probabilities_and_logits_give_the_same_fit_and_output():
    labels, logits = overconfident_multilabel(2)
    probs = expit(logits)
    t_probs = fit_temperature(labels, probs, "multilabel")
    t_logits = fit_temperature(labels, logits, "multilabel", inputs="logits")
    np.testing.assert_allclose(t_probs, t_logits, rtol=1e-4)
    np.testing.assert_allclose(
        apply_temperature(probs, t_logits, "multilabel"),
        apply_temperature(logits, t_logits, "multilabel", "logits"),
        atol=1e-6,
    )
    np.testing.assert_allclose(apply_temperature(probs, 1.0, "multilabel"), probs, atol=1e-6)
    # 0 and 1 become finite logits instead of infinities.
    assert np.all(np.isfinite(to_logits(np.array([[0.0, 1.0]]), "multilabel")))


def test_crossfit_temperature_is_out_of_fold_and_improves_calibration():
    labels, logits = overconfident_multilabel(3, factor=(3.0, 3.0, 3.0))
    patients = (np.arange(len(labels)) // 2).astype(str)
    probs = expit(logits)
    result = crossfit_temperature(labels, probs, patients, "multilabel", n_folds=5, seed=1)
    assert (pd.Series(result.folds).groupby(patients).nunique() == 1).all()
    for k in range(5):
        others = result.folds != k
        np.testing.assert_allclose(
            result.fold_temperatures[k],
            fit_temperature(labels[others], probs[others], "multilabel"),
        )
        np.testing.assert_allclose(
            result.calibrated[~others],
            apply_temperature(probs[~others], result.fold_temperatures[k], "multilabel"),
        )
    np.testing.assert_allclose(
        result.final_temperature, fit_temperature(labels, probs, "multilabel")
    )
    np.testing.assert_allclose(
        result.before["ece"], expected_calibration_error(labels, probs), atol=1e-6
    )
    np.testing.assert_allclose(result.after["brier"], brier_score(labels, result.calibrated))
    assert np.all(result.after["ece"] < result.before["ece"]) and np.all(
        result.after["brier"] < result.before["brier"]
    )
    assert result.source == "val:crossfit-5"


def test_crossfit_temperature_multiclass_and_calibration_change():
    rng = np.random.default_rng(4)
    z = rng.normal(0, 1.0, (600, 3))
    truth = np.array([rng.choice(3, p=p) for p in softmax(z, axis=1)])
    patients = (np.arange(600) // 3).astype(str)
    result = crossfit_temperature(
        np.eye(3)[truth], 3 * z, patients, "multiclass", inputs="logits", n_folds=3
    )
    assert result.fold_temperatures.shape == (3, 1)
    np.testing.assert_allclose(result.calibrated.sum(axis=1), 1.0)
    change = calibration_change(np.eye(3)[truth], softmax(3 * z, axis=1), result.calibrated)
    np.testing.assert_allclose(change["after"]["brier"], result.after["brier"])
    assert np.all(change["after"]["brier"] < change["before"]["brier"])


def test_temperature_input_errors():
    labels, logits = overconfident_multilabel(0, n=50)
    with pytest.raises(MetricInputError, match="probabilities must lie in"):
        fit_temperature(labels, logits, "multilabel")
    with pytest.raises(MetricInputError, match="one positive temperature per class"):
        apply_temperature(expit(logits), [1.0, 2.0], "multilabel")
    with pytest.raises(MetricInputError, match="task"):
        fit_temperature(labels, expit(logits), "regression")
    one_class = np.zeros((50, 3))
    assert np.isnan(fit_temperature(one_class, expit(logits), "multilabel")).all()
