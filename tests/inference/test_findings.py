"""Findings summary: order, calls, borderline band, abnormality score, multiclass ties, export."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.data.imaging import LoadedImage
from cxr_core.inference.findings import (
    BORDERLINE_BAND,
    BORDERLINE_FRACTION,
    NEAR_TIE_MARGIN,
    borderline_band,
    is_borderline,
    summarise_findings,
)
from cxr_core.inference.outcome import OUT_OF_DOMAIN, REFUSED
from cxr_core.inference.predictor import Prediction
from cxr_core.inference.table_rows import prediction_row, upload_rows


def multilabel(probs: dict[str, float], thresholds: dict[str, float]) -> Prediction:
    return Prediction(probs, [c for c in probs if probs[c] >= thresholds[c]], thresholds, "a.png")


def test_positives_first_then_by_probability():
    p = multilabel(
        {"Mass": 0.30, "Effusion": 0.90, "Nodule": 0.20, "Hernia": 0.95},
        {"Mass": 0.25, "Effusion": 0.50, "Nodule": 0.10, "Hernia": 0.99},
    )
    s = summarise_findings(p, multilabel=True)
    assert [f.name for f in s.findings] == ["Effusion", "Mass", "Nodule", "Hernia"]
    assert [f.name for f in s.positives] == ["Effusion", "Mass", "Nodule"]
    assert s.findings[-1].positive is False  # Hernia is the most probable but below its threshold
    assert s.abnormality == pytest.approx(0.95) and s.abnormality_class == "Hernia"
    assert s.abnormality_threshold == pytest.approx(0.99) and s.abnormal is True


def test_borderline_band_either_side_of_the_threshold():
    t = 0.154
    band = borderline_band(t)
    assert band == pytest.approx(BORDERLINE_FRACTION * t)  # 0.031: a fraction of a low threshold
    p = multilabel(
        {"Mass": t, "Nodule": t - band, "Effusion": t + band + 0.001, "Edema": t - band - 0.001},
        {c: t for c in ("Mass", "Nodule", "Effusion", "Edema")},
    )
    s = summarise_findings(p, multilabel=True)
    flags = {f.name: f.borderline for f in s.findings}
    assert flags == {"Mass": True, "Nodule": True, "Effusion": False, "Edema": False}
    assert [f.name for f in s.borderline] == ["Mass", "Nodule"]
    assert borderline_band(0.5) == BORDERLINE_BAND  # capped for high thresholds
    assert is_borderline(0.5, 0.52, band=0.02) and not is_borderline(0.5, 0.53, band=0.02)
    assert not is_borderline(
        0.07, 0.09
    )  # 0.02 away from a 0.09 threshold is outside its 0.018 band


def test_nothing_called_is_not_abnormal():
    s = summarise_findings(
        multilabel({"Mass": 0.1, "Nodule": 0.2}, {"Mass": 0.5, "Nodule": 0.5}), multilabel=True
    )
    assert s.positives == () and s.abnormal is False
    assert s.abnormality == pytest.approx(0.2) and s.abnormality_class == "Nodule"


def test_multiclass_normal_is_not_a_positive_finding_and_near_ties_are_flagged():
    normal = Prediction(
        {"Normal": 0.99, "Pneumonia": 0.01}, ["Normal"], {"Normal": 0.5, "Pneumonia": 0.5}, "n.png"
    )
    s = summarise_findings(normal, multilabel=False)
    assert s.positives == () and s.abnormal is False
    assert (
        s.most_probable == ("Normal", 0.99)
        and s.runner_up == ("Pneumonia", 0.01)
        and not s.near_tie
    )
    assert all(not f.borderline for f in s.findings)  # thresholds do not decide multiclass calls

    tie = Prediction({"Normal": 0.0, "Bacterial": 0.55, "Viral": 0.45}, ["Bacterial"], {}, "t.png")
    s = summarise_findings(tie, multilabel=False)
    assert s.most_probable == ("Bacterial", 0.55) and s.runner_up == ("Viral", 0.45)
    assert 0.55 - 0.45 <= NEAR_TIE_MARGIN and s.near_tie
    assert [f.name for f in s.positives] == ["Bacterial"] and s.abnormal
    assert [f.name for f in s.findings] == ["Bacterial", "Viral", "Normal"]


def test_outcomes_shape_the_summary_and_the_table_row():
    thresholds = {"Mass": 0.5, "Nodule": 0.18}
    probs = {"Mass": 0.6, "Nodule": 0.2}
    withheld = Prediction(
        probs, [], thresholds, "child.png", ["unlike the training films"], OUT_OF_DOMAIN, "unlike"
    )
    summary = summarise_findings(withheld, multilabel=True)
    assert summary.calls_withheld and summary.positives == () and summary.borderline == ()
    assert [f.name for f in summary.findings] == ["Mass", "Nodule"]  # still in reading order
    anyway = Prediction(
        probs, ["Mass", "Nodule"], thresholds, "child.png", [], OUT_OF_DOMAIN, "unlike", True
    )
    scored = summarise_findings(anyway, multilabel=True)
    assert not scored.calls_withheld and [f.name for f in scored.positives] == ["Mass", "Nodule"]
    assert [f.name for f in scored.borderline] == ["Nodule"]
    refused = Prediction.refused("photo.jpeg", "not a chest radiograph", thresholds)
    empty = summarise_findings(refused, multilabel=True)
    assert (
        empty.outcome == REFUSED
        and empty.findings == ()
        and empty.reason == "not a chest radiograph"
    )
    rows = [
        prediction_row(p, image_id=p.name, multilabel=True) for p in (withheld, anyway, refused)
    ]
    assert [r.outcome for r in rows] == [OUT_OF_DOMAIN, OUT_OF_DOMAIN, REFUSED]
    assert [r.scored_anyway for r in rows] == [False, True, False]
    assert [r.findings for r in rows] == [[], ["Mass", "Nodule"], []]
    assert [r.probabilities.get("Mass") for r in rows] == [0.6, 0.6, None]
    assert rows[2].reason == "not a chest radiograph"


def test_a_flagged_class_is_shown_apart_never_called_and_never_the_abnormality_score():
    p = Prediction(
        {"Hernia": 0.09, "Effusion": 0.45, "Mass": 0.2},
        ["Hernia", "Mass"],
        {"Hernia": 0.05, "Effusion": 0.5, "Mass": 0.19},
        "a.png",
        ["lateral view"],
    )
    flags = {"Hernia": "low count (7 validation positives, 305 negatives)"}
    s = summarise_findings(p, multilabel=True, flagged=flags)
    assert [f.name for f in s.positives] == ["Mass"]  # Hernia reaches its threshold, not called
    assert [(f.name, f.above_threshold, f.borderline) for f in s.flagged] == [
        ("Hernia", True, False)
    ]
    assert s.abnormality_class == "Effusion" and s.abnormality == pytest.approx(0.45)
    assert s.abnormal is True  # Mass is called
    alone = summarise_findings(
        Prediction({"Hernia": 0.9, "Mass": 0.1}, ["Hernia"], {"Hernia": 0.05, "Mass": 0.5}),
        multilabel=True,
        flagged=flags,
    )
    assert not alone.positives and alone.abnormal is False and alone.abnormality_class == "Mass"
    image = LoadedImage(np.zeros((4, 4), np.float32), "a.png", {})
    (row,) = upload_rows(
        [p],
        [image],
        multilabel=True,
        model="m",
        checkpoint_digest="d",
        threshold_set="card",
        flagged=flags,
    )
    assert list(row.findings) == ["Mass"] and row.extra["not_trusted"] == "Hernia"
    assert list(row.warnings) == ["lateral view"] and row.extra["borderline"] == "Mass; Effusion"


def test_flagged_classes_read_the_cards_own_warnings():
    import dataclasses
    from pathlib import Path

    from cxr_core.inference.class_flags import flagged_classes
    from cxr_core.models.checkpoint import read_model_card

    card = read_model_card(
        Path(__file__).resolve().parents[2] / "checkpoints" / "nih14" / "model.safetensors"
    )
    hernia = card.validation["per_class"]["Hernia"]
    assert flagged_classes(card) == {
        "Hernia": f"low count ({hernia['n_pos']} validation positives, {hernia['n_neg']} negatives)"
    }
    validation = {
        **card.validation,
        "threshold_fallback_classes": ["Edema"],
        "per_class": {
            **card.validation["per_class"],
            "Nodule": {**card.validation["per_class"]["Nodule"], "auroc_ci": [0.49, 0.67]},
        },
    }
    flags = flagged_classes(dataclasses.replace(card, validation=validation))
    assert set(flags) == {"Hernia", "Nodule", "Edema"}
    assert "not clearly better than chance" in flags["Nodule"] and "0.49" in flags["Nodule"]
    assert "fallback" in flags["Edema"]
