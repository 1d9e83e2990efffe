"""Paired comparison of two evaluation runs: numbers against scikit-learn and the paired
statistics, the JSON round trip, and refusal of runs that are not on the same images and labels."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxr_core.errors import NotPairedError
from cxr_core.evaluation.compare import (
    ComparisonReport,
    ScoredRun,
    compare_runs,
    comparison_table,
    format_comparison,
    write_comparison,
)
from cxr_core.metrics.paired import delong_test, mcnemar_tests

CLASSES = ("Effusion", "Hernia")


def frame(seed: int, labels: np.ndarray, strength: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(labels)
    probs = 1 / (
        1 + np.exp(-(strength * (2 * np.nan_to_num(labels) - 1) + rng.normal(size=labels.shape)))
    )
    out = pd.DataFrame(
        {
            "image_id": [f"img{i:03d}.png" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "path": "",
        }
    )
    for c, name in enumerate(CLASSES):
        out[f"label:{name}"] = labels[:, c]
    for c, name in enumerate(CLASSES):
        out[f"prob:{name}"] = probs[:, c]
    return out


@pytest.fixture(scope="module")
def runs() -> tuple[ScoredRun, ScoredRun]:
    rng = np.random.default_rng(0)
    labels = (rng.random((240, 2)) < [0.3, 0.03]).astype(float)
    labels[rng.random(240) < 0.05, 0] = np.nan
    a, b = frame(1, labels, 1.5), frame(2, labels, 0.8)
    b = b.iloc[::-1].reset_index(drop=True)  # same images in another order

    def scored(name: str, f: pd.DataFrame, t: float) -> ScoredRun:
        calls = f[[f"prob:{c}" for c in CLASSES]].to_numpy() >= t
        return ScoredRun(name, f, CLASSES, calls, {c: t for c in CLASSES}, "given")

    return scored("strong", a, 0.5), scored("weak", b, 0.4)


def test_comparison_numbers_match_sklearn_and_the_paired_tests(runs):
    first, second = runs
    report = compare_runs(first, second, n_boot=200, seed=0)
    assert report.n_images == 240 and report.n_patients == 120
    b = second.predictions.set_index("image_id").loc[first.predictions["image_id"]]
    labels = first.predictions[[f"label:{c}" for c in CLASSES]].to_numpy()
    pa = first.predictions[[f"prob:{c}" for c in CLASSES]].to_numpy()
    pb = b[[f"prob:{c}" for c in CLASSES]].to_numpy()
    delong = delong_test(labels, pa, pb)
    tests = mcnemar_tests(labels, pa >= 0.5, pb >= 0.4)
    for c, name in enumerate(CLASSES):
        e = report.per_class[name]
        known = ~np.isnan(labels[:, c])
        y = labels[known, c]
        auroc_a, auroc_b = roc_auc_score(y, pa[known, c]), roc_auc_score(y, pb[known, c])
        assert e.delta_auroc == pytest.approx(auroc_a - auroc_b, abs=1e-12)
        assert e.ap_first == pytest.approx(average_precision_score(y, pa[known, c]), abs=1e-12)
        assert e.delta_auroc_ci[0] <= e.delta_auroc <= e.delta_auroc_ci[1]
        assert e.delong_p == pytest.approx(delong.p_value[c])
        positives = y == 1
        sens_a = np.mean(pa[known, c][positives] >= 0.5)
        sens_b = np.mean(pb[known, c][positives] >= 0.4)
        assert e.delta_sensitivity == pytest.approx(sens_a - sens_b)
        assert e.mcnemar_sensitivity_p == pytest.approx(tests[c]["sensitivity"].p_value)
        assert (e.threshold_first, e.threshold_second) == (0.5, 0.4)
    assert not report.per_class["Effusion"].low_count and report.per_class["Hernia"].low_count
    assert (
        report.per_class["Effusion"].delta_auroc > 0
    )  # the stronger model wins on the common finding


def test_comparison_report_json_round_trip_table_and_text(runs, tmp_path):
    report = compare_runs(*runs, n_boot=50, seed=1)
    write_comparison(tmp_path, report)
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert "delta_auroc" in written["per_class"]["Effusion"]
    assert ComparisonReport.from_dict(written) == report
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert list(table["finding"]) == list(CLASSES)
    assert {"AUROC strong", "AUROC weak", "ΔAUROC 95% CI low", "DeLong p"} <= set(table.columns)
    pd.testing.assert_frame_equal(table, comparison_table(report), check_dtype=False, rtol=1e-12)
    text = format_comparison(report)
    assert "1 = strong, 2 = weak" in text and "Hernia *" in text


def test_runs_on_different_images_are_refused(runs):
    first, second = runs
    fewer = ScoredRun(
        "subset",
        second.predictions.iloc[:200],
        CLASSES,
        second.decisions[:200],
        second.thresholds,
        "given",
    )
    with pytest.raises(NotPairedError, match="240 images and subset on 200, 200 of them the same"):
        compare_runs(first, fewer, n_boot=10)


def test_runs_with_different_labels_for_the_same_images_are_refused(runs):
    first, second = runs
    relabelled = second.predictions.copy()
    relabelled.loc[:4, "label:Effusion"] = 1 - relabelled.loc[:4, "label:Effusion"].fillna(0)
    other = ScoredRun("other truth", relabelled, CLASSES, second.decisions, {}, "given")
    with pytest.raises(NotPairedError, match="different label sources"):
        compare_runs(first, other, n_boot=10)
