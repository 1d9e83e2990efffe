"""A second truth: a label manifest joined by image id (classes by harmonised name) or a review
session's corrected labels, scored with the same predictions and calls, the change paired."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.evaluation.truth import (
    TruthComparison,
    compare_truths,
    format_truth,
    labels_from_manifest,
    labels_from_review,
    truth_table,
)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> EvalRun:
    rng = np.random.default_rng(0)
    n = 200
    labels = (rng.random((n, 2)) < [0.4, 0.3]).astype(float)
    probs = np.clip(0.3 + 0.35 * labels + rng.normal(0, 0.2, labels.shape), 0.01, 0.99)
    frame = pd.DataFrame(
        {
            "image_id": [f"{i:05d}.png" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "path": "",
            "label:Pleural Effusion": labels[:, 0],
            "label:Mass": labels[:, 1],
            "prob:Pleural Effusion": probs[:, 0],
            "prob:Mass": probs[:, 1],
        }
    )
    return EvalRun("val", tmp_path_factory.mktemp("truth"), ("Pleural Effusion", "Mass"), frame)


def expert_manifest(run: EvalRun, flip: np.ndarray) -> Manifest:
    """Experts re-read the first 150 films for Effusion only (spelt as NIH spells it) and 20 films
    nobody else has; ``flip`` marks the films they label differently."""
    ids = run.predictions["image_id"].iloc[:150].tolist() + [f"other{i}.png" for i in range(20)]
    effusion = run.predictions["label:Pleural Effusion"].to_numpy()[:150].copy()
    effusion[flip] = 1 - effusion[flip]
    frame = pd.DataFrame(
        {
            "image_id": ids,
            "path": "",
            "patient_id": "",
            "view": "",
            "split": "",
            "Effusion": np.r_[effusion, np.zeros(20)],
        }
    )
    return Manifest(frame, LabelSpace("experts", ("Effusion",)), "expert panel")


def test_a_label_manifest_is_joined_by_image_id_and_class_name(run):
    flip = np.zeros(150, dtype=bool)
    flip[:12] = True
    alternate = labels_from_manifest(run, expert_manifest(run, flip))
    assert alternate.classes == ("Pleural Effusion",) and alternate.matched_images == 150
    assert np.isnan(alternate.labels[150:]).all() and np.isnan(alternate.labels[:, 1]).all()
    calls = run.scores() >= 0.5
    comparison = compare_truths(run, alternate, calls, n_boot=300, seed=1)
    e = comparison.per_class["Pleural Effusion"]
    assert (e.n_images, e.n_disagree) == (150, 12) and "Mass" not in comparison.per_class
    y_data = run.labels()[:150, 0]
    y_expert = alternate.labels[:150, 0]
    p = run.scores()[:150, 0]
    assert e.auroc_primary == pytest.approx(roc_auc_score(y_data, p))
    assert e.auroc_alternate == pytest.approx(roc_auc_score(y_expert, p))
    assert e.delta_auroc == pytest.approx(e.auroc_alternate - e.auroc_primary)
    assert e.sensitivity_alternate == pytest.approx(recall_score(y_expert, p >= 0.5))
    assert e.delta_auroc_ci[0] <= e.delta_auroc <= e.delta_auroc_ci[1]
    assert TruthComparison.from_dict(json.loads(comparison.to_json())) == comparison
    assert set(truth_table(comparison)["metric"]) == {"auroc", "ap", "sensitivity", "specificity"}
    assert "expert panel vs dataset labels: 150 of 200 images" in format_truth(comparison)


def test_a_second_truth_about_other_images_is_refused(run):
    frame = pd.DataFrame(
        {
            "image_id": ["elsewhere.png"],
            "path": "",
            "patient_id": "",
            "view": "",
            "split": "",
            "Mass": [1.0],
        }
    )
    with pytest.raises(DatasetError, match="labels none of the 200 images"):
        labels_from_manifest(run, Manifest(frame, LabelSpace("x", ("Mass",)), "another hospital"))


def test_review_session_labels_cover_only_the_films_readers_called(run):
    ids = run.predictions["image_id"].tolist()
    corrected = pd.DataFrame(
        {
            "image_id": ids[:8],
            "class_name": "Mass",
            "original": run.labels()[:8, 1].astype(int),
            "corrected": 1 - run.labels()[:8, 1].astype(int),
            "source": "adjudicated",
        }
    )
    alternate = labels_from_review(run, corrected, "review session 4")
    assert alternate.classes == ("Mass",) and alternate.matched_images == 8
    comparison = compare_truths(run, alternate, run.scores() >= 0.5, n_boot=50)
    e = comparison.per_class["Mass"]
    assert e.n_images == 8 and e.n_disagree == 8
    assert e.auroc_primary is None and e.delta_auroc is None  # 8 films: not enough
    text = format_truth(comparison)
    assert "not enough films" in text and "nan" not in text
