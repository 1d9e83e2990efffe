"""The Performance page's threshold-source note, calibration table and subgroup table, on a scored report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.evaluation.run import score_predictions
from cxr_core.metrics import EvaluationReport
from cxr_core.models.card import ModelCard
from dashboard.evaluation_views import (
    AS_EVALUATED,
    calibration_table,
    flagged_count,
    reliability_bins_of,
    subgroup_note,
    subgroup_table,
    threshold_source_note,
    threshold_table_captions,
    threshold_table_options,
)

CLASSES = ("Mass", "Edema")


@pytest.fixture(scope="module")
def scored() -> tuple[EvaluationReport, pd.DataFrame]:
    rng = np.random.default_rng(3)
    n = 240
    labels = (rng.random((n, 2)) < [0.3, 0.2]).astype(float)
    sex = np.where(np.arange(n) % 3 == 0, "F", "M")
    shift = np.where(sex == "F", 0.2, 1.5)[:, None]  # the model separates women's cases far worse
    logits = shift * (2 * labels - 1) + rng.normal(0, 1, labels.shape)
    probs = 1 / (1 + np.exp(-logits))
    frame = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "path": [f"x/{i}.png" for i in range(n)],
        }
    )
    for c, name in enumerate(CLASSES):
        frame[f"label:{name}"] = labels[:, c]
    for c, name in enumerate(CLASSES):
        frame[f"prob:{name}"] = probs[:, c]
    card = ModelCard(
        architecture="small_cnn",
        num_classes=2,
        label_space={"name": "toy", "classes": list(CLASSES), "task": "multilabel"},
        preprocess=PreprocessConfig(input_size=32, cache_size=32).to_dict(),
        calibration={"method": "temperature", "temperature": [1.3, 0.8], "fitted_on": "val"},
        validation={"split": "val", "thresholds_from": "val:crossfit-5"},
        threshold_method="max_f1",
    )
    report = score_predictions(
        frame, card, n_boot=200, seed=0, thresholds="max_f1", split="val", subgroups={"sex": sex}
    )
    frame["sex"] = sex
    return report, frame


def typed(sections: dict) -> EvaluationReport:
    """A report holding only ``sections`` (the rest empty), as an older or partial report.json reads."""
    return EvaluationReport.from_dict(
        {"task": "multilabel", "class_names": [], "n_cases": 0, "per_class": {}, **sections}
    )


def test_threshold_source_notes(scored):
    report, _ = scored
    assert report.thresholds_from == "val:crossfit-5"
    note = threshold_source_note(report)
    assert "out of sample" in note and "max_f1 fitted on 4 of 5 patient folds of val" in note
    assert "in sample" in threshold_source_note(report, "card")
    assert "“screening”" in threshold_source_note(report, "screening")
    assert "model card" in threshold_source_note(replace(report, thresholds_from="card"))
    assert "not recorded" in threshold_source_note(typed({}))


def test_threshold_table_opens_on_the_report_and_marks_the_recomputation_in_sample():
    options = threshold_table_options("card", has_report=True)
    assert options == [AS_EVALUATED, "active set “card” (recomputed)"]
    captions = threshold_table_captions(options)
    assert (
        "out of fold" in captions[0] and "in sample" in captions[1] and "optimistic" in captions[1]
    )
    only = threshold_table_options(
        "screening", has_report=False
    )  # nothing else to show without a report
    assert (
        only == ["active set “screening” (recomputed)"]
        and "in sample" in threshold_table_captions(only)[0]
    )


def test_calibration_table_matches_the_report(scored):
    report, _ = scored
    table = calibration_table(report).set_index("class")
    change = report.calibration_change
    assert list(table.index) == [*CLASSES, "(macro average)"]
    assert table.loc["Edema", "temperature"] == 0.8
    assert table.loc["Mass", "ECE before"] == change.per_class["Mass"].ece_before
    assert table.loc["(macro average)", "Brier after"] == pytest.approx(
        np.mean([change.per_class[c].brier_after for c in CLASSES])
    )
    assert set(reliability_bins_of(report, "before")) == set(CLASSES)
    assert calibration_table(typed({})).empty


def test_subgroup_table_flags_the_worse_group_first(scored):
    report, frame = scored
    table = subgroup_table(report, "sex")
    assert len(table) == 4 and table["flagged"].iloc[0]
    women = table[(table["subgroup"] == "F") & (table["class"] == "Mass")].iloc[0]
    rows = frame[frame["sex"] == "F"]
    assert women["auroc"] == pytest.approx(roc_auc_score(rows["label:Mass"], rows["prob:Mass"]))
    assert women["gap"] < 0 and women["gap high"] < 0 and women["flagged"]
    assert "flagged when that interval excludes zero" in subgroup_note(report)
    assert subgroup_table(report, "age").empty
    assert flagged_count(table)[0] >= 1


def test_low_count_flags_sort_after_counted_ones():
    def group(n_pos, gap, flag):
        return {
            "n_pos": n_pos,
            "low_count": n_pos < 10,
            "auroc": 0.5,
            "auroc_ci": [0.4, 0.6],
            "auroc_gap": gap,
            "auroc_gap_ci": [gap - 0.1, gap + 0.1],
            "auroc_gap_flag": flag,
        }

    report = typed(
        {
            "subgroups": {
                "by": {
                    "view": {
                        "subgroups": {
                            "AP": {
                                "n": 50,
                                "n_patients": 40,
                                "per_class": {
                                    "Hernia": group(1, -0.6, True),
                                    "Mass": group(20, 0.02, False),
                                },
                            },
                            "PA": {
                                "n": 60,
                                "n_patients": 50,
                                "per_class": {
                                    "Hernia": group(2, 0.05, False),
                                    "Mass": group(25, -0.2, True),
                                },
                            },
                        }
                    }
                }
            }
        }
    )
    table = subgroup_table(report, "view")
    assert list(zip(table["subgroup"], table["class"])) == [
        ("PA", "Mass"),
        ("AP", "Mass"),
        ("AP", "Hernia"),
        ("PA", "Hernia"),
    ]
    assert flagged_count(table) == (1, 1)
    assert "no subgroup information" in subgroup_note(
        typed(
            {
                "subgroups": {
                    "keys": [],
                    "by": {},
                    "note": "no subgroup information (view, sex, age)",
                }
            }
        )
    )
