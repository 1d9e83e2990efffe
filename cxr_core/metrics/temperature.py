"""Temperature scaling: one number that makes over- or under-confident probabilities honest.

Dividing a model's logits by a temperature T > 1 softens its probabilities, T < 1 sharpens
them; the ranking of cases (and so AUROC) does not change. T is fitted by minimising the
negative log-likelihood of the labels (scipy's bounded scalar minimiser):

* multilabel: one T per class, ``sigmoid(logit / T)``, over that class's known labels;
* multiclass: one T for the model, ``softmax(logits / T)``, over the cases with a known class.

Inputs may be logits or probabilities. Probabilities are turned into logits after clipping to
``[EPS, 1 - EPS]`` (a stored 0.0 or 1.0 would otherwise be an infinite logit); for softmax,
``log(p)`` differs from the original logits only by a per-case constant, which softmax ignores.

Fitting T on the cases it is then judged on flatters the calibration numbers, so
:func:`crossfit_temperature` fits it on the other patients' folds (as
:mod:`cxr_core.metrics.crossfit` does for thresholds) and reports ECE and Brier before and
after on the out-of-fold probabilities, plus the final T fitted on all cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, logsumexp, softmax

from cxr_core.metrics._inputs import MetricInputError, check_labels, check_scores
from cxr_core.metrics.calibration import brier_score, expected_calibration_error
from cxr_core.metrics.crossfit import patient_folds

Task = Literal["multilabel", "multiclass"]
Inputs = Literal["probabilities", "logits"]
EPS = 1e-7
# Beyond these the fit is fighting degenerate data (perfect separation, constant scores).
TEMPERATURE_BOUNDS: tuple[float, float] = (0.05, 20.0)


def _check_task(task: str, inputs: str) -> None:
    if task not in ("multilabel", "multiclass"):
        raise MetricInputError(f"task must be 'multilabel' or 'multiclass'; got {task!r}")
    if inputs not in ("probabilities", "logits"):
        raise MetricInputError(f"inputs must be 'probabilities' or 'logits'; got {inputs!r}")


def to_logits(scores: object, task: Task, inputs: Inputs = "probabilities") -> np.ndarray:
    """(N, C) logits; probabilities are clipped to [EPS, 1 - EPS] first (see the module docstring)."""
    _check_task(task, inputs)
    values = check_scores(scores)
    if inputs == "logits":
        return values
    if np.any((values < 0) | (values > 1)):
        raise MetricInputError(
            "probabilities must lie in [0, 1]; pass inputs='logits' for raw model outputs"
        )
    clipped = np.clip(values, EPS, 1 - EPS)
    return np.log(clipped) - np.log1p(-clipped) if task == "multilabel" else np.log(clipped)


def apply_temperature(
    scores: object, temperature: object, task: Task, inputs: Inputs = "probabilities"
) -> np.ndarray:
    """Calibrated probabilities (N, C): ``sigmoid(logit / T)`` per class or ``softmax(logits / T)``."""
    logits = to_logits(scores, task, inputs)
    t = np.asarray(temperature, dtype=np.float64).reshape(-1)
    expected = logits.shape[1] if task == "multilabel" else 1
    if t.size == 1 and task == "multilabel":
        t = np.full(expected, t[0])
    if t.size != expected or not np.all(np.isfinite(t) & (t > 0)):
        wanted = "one positive temperature" + (" per class" if task == "multilabel" else "")
        raise MetricInputError(f"{task} temperature scaling takes {wanted}; got {t.tolist()}")
    return expit(logits / t) if task == "multilabel" else softmax(logits / t[0], axis=1)


def _binary_nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    scaled = z / t
    return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))


def _multiclass_nll(z: np.ndarray, y: np.ndarray, t: float) -> float:
    scaled = z / t
    return float(np.mean(logsumexp(scaled, axis=1) - scaled[np.arange(len(y)), y]))


def _minimise(nll, bounds: tuple[float, float]) -> float:
    # Searching log T treats halving and doubling alike; xatol 1e-6 in log T is far below any visible effect.
    result = minimize_scalar(
        lambda log_t: nll(np.exp(log_t)),
        bounds=np.log(bounds),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def _known_multiclass(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known = ~np.isnan(labels).any(axis=1)
    if np.any(labels[known].sum(axis=1) != 1):
        raise MetricInputError(
            "multiclass labels must mark exactly one class per case (one-hot rows)"
        )
    return known, np.argmax(labels[known], axis=1)


def fit_temperature(
    y_true: object,
    scores: object,
    task: Task,
    *,
    inputs: Inputs = "probabilities",
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> np.ndarray:
    """Temperatures minimising the NLL: (C,) for multilabel (NaN for a class without both
    known positives and negatives, where any T fits equally), (1,) for multiclass."""
    labels = check_labels(y_true)
    logits = to_logits(scores, task, inputs)
    if labels.shape != logits.shape:
        raise MetricInputError(f"labels have shape {labels.shape} but scores {logits.shape}")
    if task == "multiclass":
        known, y = _known_multiclass(labels)
        if not known.any():
            raise MetricInputError("no case with a known class to fit a temperature on")
        z = logits[known]
        return np.array([_minimise(lambda t: _multiclass_nll(z, y, t), bounds)])
    out = np.full(labels.shape[1], np.nan)
    for c in range(labels.shape[1]):
        known = ~np.isnan(labels[:, c])
        y, z = labels[known, c], logits[known, c]
        if 0 < y.sum() < y.size:
            out[c] = _minimise(lambda t, z=z, y=y: _binary_nll(z, y, t), bounds)
    return out


def _apply_or_keep(
    scores: np.ndarray, temperature: np.ndarray, task: Task, inputs: Inputs
) -> np.ndarray:
    """Like :func:`apply_temperature`, leaving a class without a fitted T (NaN) at T = 1."""
    return apply_temperature(
        scores, np.where(np.isnan(temperature), 1.0, temperature), task, inputs
    )


@dataclass(frozen=True)
class CrossFitTemperature:
    """Out-of-fold temperature scaling; see :func:`crossfit_temperature`.

    ``calibrated`` (N, C) holds each case's probabilities scaled by the temperature of the
    folds it is not in; ``before``/``after`` hold per-class ``ece`` and ``brier`` (C,) of the
    uncalibrated and out-of-fold calibrated probabilities; ``final_temperature`` is fitted on
    all cases (the one to store).
    """

    folds: np.ndarray
    fold_temperatures: np.ndarray
    calibrated: np.ndarray
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    final_temperature: np.ndarray
    source: str


def calibration_change(
    y_true: object, before: object, after: object, n_bins: int = 10
) -> dict[str, dict[str, np.ndarray]]:
    """Per-class ECE and Brier of two sets of probabilities for the same cases (before/after)."""
    return {
        name: {
            "ece": expected_calibration_error(y_true, probs, n_bins=n_bins),
            "brier": brier_score(y_true, probs),
        }
        for name, probs in (("before", before), ("after", after))
    }


def crossfit_temperature(
    y_true: object,
    scores: object,
    groups: object,
    task: Task,
    *,
    inputs: Inputs = "probabilities",
    n_folds: int = 5,
    seed: int = 0,
    n_bins: int = 10,
    split: str = "val",
) -> CrossFitTemperature:
    """Temperatures fitted on the other patients' folds, applied out of fold, plus a final fit on all."""
    labels = check_labels(y_true)
    logits = to_logits(scores, task, inputs)
    folds = patient_folds(labels, groups, n_folds=n_folds, seed=seed)
    n_folds = int(folds.max()) + 1
    calibrated = np.empty(logits.shape)
    fitted = []
    for k in range(n_folds):
        held_out = folds == k
        t = fit_temperature(labels[~held_out], logits[~held_out], task, inputs="logits")
        calibrated[held_out] = _apply_or_keep(logits[held_out], t, task, "logits")
        fitted.append(t)
    uncalibrated = expit(logits) if task == "multilabel" else np.exp(log_softmax(logits, axis=1))
    change = calibration_change(labels, uncalibrated, calibrated, n_bins=n_bins)
    return CrossFitTemperature(
        folds=folds,
        fold_temperatures=np.stack(fitted),
        calibrated=calibrated,
        before=change["before"],
        after=change["after"],
        final_temperature=fit_temperature(labels, logits, task, inputs="logits"),
        source=f"{split}:crossfit-{n_folds}",
    )
