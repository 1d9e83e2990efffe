"""Cross-fitted operating points: no case judged by a threshold fitted on it, patients kept whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score

from cxr_core.metrics import (
    MetricInputError,
    bootstrap_cis,
    crossfit_thresholds,
    patient_folds,
    select_thresholds,
)


def patient_case(seed: int = 0, n_patients: int = 150):
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 4, n_patients)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], images)
    n = patients.size
    labels = (rng.random((n, 3)) < [0.3, 0.15, 0.05]).astype(float)
    scores = np.round(rng.random((n, 3)) + 0.6 * labels, 3)
    labels[rng.random((n, 3)) < 0.05] = np.nan
    return labels, scores, patients


@pytest.mark.parametrize("spec", ["max_f1", "youden", "sensitivity=0.9", "specificity=0.8"])
def test_no_case_is_judged_by_a_threshold_fitted_on_it(spec):
    labels, scores, patients = patient_case(1)
    result = crossfit_thresholds(labels, scores, patients, spec, n_folds=5, seed=2)
    method, _, value = spec.partition("=")
    value = float(value) if value else None
    assert sorted(set(result.folds)) == [0, 1, 2, 3, 4]
    for i in np.random.default_rng(0).choice(len(labels), 25, replace=False):
        others = result.folds != result.folds[i]
        assert not others[i]
        np.testing.assert_array_equal(
            result.case_thresholds[i],
            select_thresholds(labels[others], scores[others], method, value),
        )
    np.testing.assert_array_equal(
        result.final_thresholds, select_thresholds(labels, scores, method, value)
    )
    assert result.source == "val:crossfit-5" and str(result.spec) == spec


def test_patients_never_straddle_folds_and_folds_are_seeded():
    labels, _, patients = patient_case(2)
    folds = patient_folds(labels, patients, n_folds=5, seed=3)
    assert (pd.Series(folds).groupby(patients).nunique() == 1).all()
    np.testing.assert_array_equal(folds, patient_folds(labels, patients, n_folds=5, seed=3))
    assert not np.array_equal(folds, patient_folds(labels, patients, n_folds=5, seed=4))
    # Stratified by the rarest finding: the rare class reaches every fold.
    assert all(np.nansum(labels[folds == k, 2]) > 0 for k in range(5))


def test_out_of_fold_metrics_equal_sklearn_on_the_decisions():
    labels, scores, patients = patient_case(3)
    result = crossfit_thresholds(labels, scores, patients, "max_f1", n_folds=4, split="test")
    assert result.source == "test:crossfit-4"
    assert np.all(result.n_undecided == 0)
    for c in range(3):
        known = ~np.isnan(labels[:, c])
        y, called = labels[known, c], result.decisions[known, c]
        np.testing.assert_array_equal(called, scores[known, c] >= result.case_thresholds[known, c])
        assert result.metrics["sensitivity"][c] == pytest.approx(recall_score(y, called))
        assert result.metrics["ppv"][c] == pytest.approx(precision_score(y, called))
        assert result.metrics["f1"][c] == pytest.approx(f1_score(y, called))
        # In-sample max-F1 is the best F1 any threshold reaches on these cases: out of fold cannot beat it.
        in_sample = f1_score(y, scores[known, c] >= result.final_thresholds[c])
        assert result.metrics["f1"][c] <= in_sample + 1e-12
    assert result.cis == {}
    summary = result.to_dict(["A", "B", "C"])
    assert summary["per_class"]["B"]["threshold"] == result.final_thresholds[1]
    assert len(summary["per_class"]["B"]["fold_thresholds"]) == 4 and summary["rule"] == "max_f1"


def test_folds_without_positives_leave_cases_undecided():
    labels, scores, patients = patient_case(4, n_patients=60)
    labels[:, 1] = 0.0
    labels[patients == "p0", 1] = 1.0  # one patient holds every positive
    result = crossfit_thresholds(labels, scores, patients, "max_f1", n_folds=3)
    home = result.folds[patients == "p0"][0]
    assert np.all(np.isnan(result.case_thresholds[result.folds == home, 1]))
    assert result.n_undecided[1] == np.sum(result.folds == home)
    assert not result.decisions[result.folds == home, 1].any()
    # Every positive is undecided: sensitivity is undefined, not a number from fewer cases than it seems.
    assert np.isnan(result.metrics["sensitivity"][1]) and result.metrics["tp"][1] == 0


def test_bad_crossfit_arguments():
    labels, _, patients = patient_case(0, n_patients=4)
    with pytest.raises(MetricInputError, match="cannot fill 5 patient-level folds"):
        patient_folds(labels, patients, n_folds=5)
    with pytest.raises(MetricInputError, match="at least 2 folds"):
        patient_folds(labels, patients, n_folds=1)


def test_out_of_fold_intervals_resample_patients_with_the_calls_fixed():
    labels, scores, patients = patient_case(5)
    result = crossfit_thresholds(labels, scores, patients, "youden", n_folds=5, n_boot=100, seed=1)
    direct = bootstrap_cis(
        labels,
        scores,
        ["sensitivity", "f1"],
        decisions=result.decisions,
        groups=patients,
        n_boot=100,
        seed=1,
    )
    for name in ("sensitivity", "f1"):
        np.testing.assert_array_equal(result.cis[name].low, direct[name].low)
        assert np.all(result.cis[name].low <= result.metrics[name]) and np.all(
            result.metrics[name] <= result.cis[name].high
        )
    assert result.to_dict(["A", "B", "C"])["per_class"]["A"]["ppv_ci"] == [
        result.cis["ppv"].low[0],
        result.cis["ppv"].high[0],
    ]
