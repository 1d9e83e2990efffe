"""Subgroup metrics equal scikit-learn on the subgroup; gaps are paired patient-level bootstraps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from cxr_core.metrics import (
    MetricInputError,
    age_band,
    resample_weights,
    subgroup_report,
    subgroup_report_from_predictions,
)

NAMES = ["Effusion", "Nodule"]


def case(seed: int = 0, n_patients: int = 200):
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 4, n_patients)
    patients = np.repeat(np.arange(n_patients).astype(str), images)
    n = patients.size
    view = rng.choice(["PA", "AP"], n, p=[0.6, 0.4])
    labels = (rng.random((n, 2)) < 0.3).astype(float)
    signal = np.where(view == "AP", 0.1, 1.5)[:, None]  # the model barely works on AP films
    scores = 1 / (1 + np.exp(-(rng.normal(size=(n, 2)) + signal * labels - 1)))
    labels[rng.random((n, 2)) < 0.05] = np.nan
    view[:3] = ""  # missing view
    return labels, scores, view, patients


@pytest.fixture(scope="module")
def report():
    labels, scores, view, patients = case()
    rep = subgroup_report(
        labels, scores, view, patients, [0.4, 0.5], NAMES, key="View Position", n_boot=200, seed=1
    )
    return labels, scores, view, patients, rep


def test_subgroup_numbers_equal_sklearn_on_the_subset(report):
    labels, scores, view, patients, rep = report
    assert list(rep["subgroups"]) == ["AP", "PA", "unknown"]
    for value, rows in (("AP", view == "AP"), ("PA", view == "PA"), ("unknown", view == "")):
        group = rep["subgroups"][value]
        assert group["n"] == rows.sum() and group["n_patients"] == len(set(patients[rows]))
        for c, name in enumerate(NAMES):
            entry = group["per_class"][name]
            known = rows & ~np.isnan(labels[:, c])
            y, s = labels[known, c], scores[known, c]
            if 0 < y.sum() < y.size:
                assert entry["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
            called = s >= [0.4, 0.5][c]
            if y.sum():
                assert entry["sensitivity"] == pytest.approx(recall_score(y, called))
            if (y == 0).sum():
                assert entry["specificity"] == pytest.approx(recall_score(1 - y, ~called))
            overall = rep["overall"]["per_class"][name]
            if entry["auroc"] is not None:
                assert entry["auroc_gap"] == pytest.approx(entry["auroc"] - overall["auroc"])
    json.dumps(rep, allow_nan=False)


def test_gap_interval_is_the_paired_bootstrap_of_subgroup_minus_overall(report):
    labels, scores, view, patients, rep = report
    rows, c = view == "AP", 0
    known = ~np.isnan(labels[:, c])
    gaps = []
    for weights in resample_weights(len(labels), patients, n_boot=200, seed=1):
        for w in weights:
            overall = roc_auc_score(labels[known, c], scores[known, c], sample_weight=w[known])
            sub = known & rows
            gaps.append(
                roc_auc_score(labels[sub, c], scores[sub, c], sample_weight=w[sub]) - overall
            )
    expected = np.percentile(gaps, [2.5, 97.5])
    np.testing.assert_allclose(
        rep["subgroups"]["AP"]["per_class"]["Effusion"]["auroc_gap_ci"], expected, atol=1e-12
    )


def test_a_weak_subgroup_is_flagged_and_the_whole_is_not(report):
    *_, rep = report
    ap = rep["subgroups"]["AP"]["per_class"]["Effusion"]
    assert ap["auroc_gap"] < 0 and ap["auroc_gap_ci"][1] < 0 and ap["auroc_gap_flag"]
    labels, scores, _, patients = case(1)
    whole = subgroup_report(labels, scores, ["all"] * len(labels), patients, 0.5, NAMES, n_boot=50)
    entry = whole["subgroups"]["all"]["per_class"]["Nodule"]
    assert (
        entry["auroc_gap"] == 0 and entry["auroc_gap_ci"] == [0, 0] and not entry["auroc_gap_flag"]
    )
    assert entry["auroc_ci"] == whole["overall"]["per_class"]["Nodule"]["auroc_ci"]


def test_age_bands():
    ages = [0, 17.9, 18, 39, 40, 59.5, 60, 79, 80, 104, None, "", "n/a", -1, np.nan, "42"]
    assert age_band(ages).tolist() == [
        "<18",
        "<18",
        "18-39",
        "18-39",
        "40-59",
        "40-59",
        "60-79",
        "60-79",
        ">=80",
        ">=80",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "unknown",
        "40-59",
    ]


def test_subgroup_input_errors():
    labels, scores, view, patients = case(0, n_patients=20)
    with pytest.raises(MetricInputError, match="subgroup values"):
        subgroup_report(labels, scores, view[:-1], patients, 0.5, NAMES, n_boot=5)
    with pytest.raises(MetricInputError, match="1 class names"):
        subgroup_report(labels, scores, view, patients, 0.5, NAMES[:1], n_boot=5)


def test_report_from_a_predictions_frame_equals_the_array_call(report):
    labels, scores, view, patients, rep = report
    frame = pd.DataFrame({"patient_id": patients, "View Position": view})
    for c, name in enumerate(NAMES):
        frame[f"label:{name}"] = labels[:, c]
        frame[f"prob:{name}"] = scores[:, c]
    assert (
        subgroup_report_from_predictions(frame, "View Position", [0.4, 0.5], n_boot=200, seed=1)
        == rep
    )
    with pytest.raises(MetricInputError, match="no column 'Sex'"):
        subgroup_report_from_predictions(frame, "Sex", 0.5, n_boot=5)
    with pytest.raises(MetricInputError, match="missing \\['patient_id'\\]"):
        subgroup_report_from_predictions(
            frame.drop(columns="patient_id"), "View Position", 0.5, n_boot=5
        )
