"""Presentation helpers keep every number and only rename, format and order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard import views


def test_activation_log_newest_first():
    log = [
        {"when": "2026-12-01T20:00:00.000+00:00", "by": "A", "from": "card", "to": "screen"},
        {"when": "2026-12-01T21:00:00.000+00:00", "by": "", "from": "screen", "to": "card"},
    ]
    shown = views.activation_log(log)
    assert shown["To"].tolist() == ["card", "screen"] and shown["By"].tolist() == [
        "(not recorded)",
        "A",
    ]
    assert shown["When (UTC)"].iloc[0] == "2026-12-01 21:00:00"


def test_agreement_display_keeps_numbers_and_says_why_kappa_is_undefined():
    nan = float("nan")
    table = pd.DataFrame(
        {
            "class_name": ["Edema"] * 4,
            "statistic": ["cohen", "fleiss", "cohen", "cohen"],
            "rater_a": ["A", "", "A", "B"],
            "rater_b": ["B", "", "model", "model"],
            "n_items": [10, 9, 6, 0],
            "n_raters": [2, 3, 2, 2],
            "kappa": [0.5, 0.25, nan, nan],
            "ci_low": [0.1, nan, nan, nan],
            "ci_high": [0.8, nan, nan, nan],
            "observed_agreement": [0.7, 0.6, 1.0, nan],
            "undefined": [
                "",
                "",
                "undefined: every call the same",
                "undefined: fewer than 2 shared films",
            ],
        }
    )
    shown = views.agreement_display(table)
    assert shown["Between"].tolist() == ["A vs B", "all 3 readers", "A vs model", "B vs model"]
    assert shown["κ"].tolist() == [
        "0.500",
        "0.250",
        "undefined: every call the same",
        "undefined: fewer than 2 shared films",
    ]
    assert shown["95% CI"].tolist() == ["0.10 to 0.80", "–", "–", "–"]
    assert shown["Agreement"].tolist() == ["0.700", "0.600", "1.000", "–"]
    assert not any(
        text in str(cell) for text in ("None", "nan") for cell in shown.to_numpy().ravel()
    )


def test_disagreement_and_corrected_display():
    table = pd.DataFrame(
        {
            "image_id": ["i"],
            "class_name": ["Edema"],
            "calls": [{"B": "absent", "A": "present"}],
            "ground_truth": ["absent"],
            "model_call": ["present"],
            "probability": [0.7],
            "majority": [""],
            "adjudicated": [1],
            "adjudicator": ["ADJ"],
        }
    )
    shown = views.disagreement_display(table)
    assert shown.iloc[0]["Readers' calls"] == "A: present, B: absent"
    assert shown.iloc[0]["Majority"] == "tie" and shown.iloc[0]["Final label"] == "present"
    metrics = pd.DataFrame(
        {
            "class_name": ["Edema"],
            "threshold": [0.5],
            "n_changed": [2],
            "n_positive_original": [3],
            "n_positive_corrected": [5],
            **{
                f"{m}_{k}": [0.5]
                for m in ("auroc", "sensitivity", "specificity", "ppv", "npv")
                for k in ("original", "corrected")
            },
        }
    )
    metrics["auroc_corrected"] = 0.625
    metrics["ppv_original"] = np.nan  # nothing called positive
    out = views.corrected_display(metrics).set_index("Metric")
    assert out.loc["Positives"].tolist()[1:] == ["3", "5", "+2"]  # counts stay whole numbers
    assert out.loc["AUROC"].tolist()[1:] == ["0.500", "0.625", "+0.125"]
    assert out.loc["PPV"].tolist()[1:] == ["–", "0.500", "–"]
    assert set(out["Finding"]) == {"Edema (threshold 0.500; 2 label(s) changed)"}
    assert views.read_progress(11, 100, 11, 0) == "Film 12 / 100 · 11 read"
    assert views.read_progress(0, 100, 11, 2) == "Film 1 / 100 · 11 read · 2 with drafts"
    assert views.session_label(3, "chest", "blind_all", "2027-01-10T08:05:00.000+00:00") == (
        "#3 chest · Blinded to labels and model · 2027-01-10 08:05"
    )
    assert views.film_label(0, "img", True) == "✓ 1 · img"
    assert views.film_label(4, "img", False) == "○ 5 · img"
    assert views.film_label(4, "img", True, draft=True) == "✎ 5 · img"  # a changed call shows first


def test_blinding_texts_say_why_a_view_is_closed_and_why_it_is_open():
    from cxr_core.evaluation.review import Blinding

    closed = Blinding("blind_all", films=40, left=37)
    assert "You have **37 of 40 films** left to read" in views.closed_text(closed, "AB")
    assert "Enter your name as **Reader**" in views.closed_text(closed, "")
    assert views.open_text(Blinding("unblinded", 40, 40)) == ""
    assert views.open_text(Blinding("blind_labels", 40, 0)).startswith(
        "Open to you: you have saved your calls"
    )
    revealed = Blinding("blind_all", 40, 37, "2027-01-10T08:05:00.000+00:00")
    assert views.open_text(revealed) == (
        "Open to you since you revealed the labels and model output on "
        "10 Jan 2027, 08:05 UTC with 37 film(s) unread."
    )
    assert "on 10 Jan 2027, 08:05 UTC" in views.revealed_text(revealed.revealed_at)
