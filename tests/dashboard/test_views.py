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
            "n_items": [10, 12, 16, 3],
            "n_raters": [2, 3, 2, 2],
            "kappa": [0.5, 0.25, nan, nan],
            "ci_low": [0.1, nan, nan, nan],
            "ci_high": [0.8, nan, nan, nan],
            "observed_agreement": [0.7, 0.6, 1.0, nan],
            "agreement_ci_low": [0.4, 0.35, 1.0, nan],
            "agreement_ci_high": [0.9, 0.8, 1.0, nan],
            "undefined": [
                "",
                "",
                "undefined: every call the same",
                "not enough films (fewer than 10 shared)",
            ],
        }
    )
    shown = views.agreement_display(table)
    assert shown["Between"].tolist() == ["A vs B", "all 3 readers", "A vs model", "B vs model"]
    assert shown["κ"].tolist() == [
        "0.500",
        "0.250",
        "undefined: every call the same",
        "not enough films (fewer than 10 shared)",
    ]
    assert shown["κ 95% CI"].tolist() == ["0.10 to 0.80", "–", "–", "–"]
    assert shown["Agreement"].tolist() == ["0.700", "0.600", "1.000", "not enough films"]
    assert shown["Agreement 95% CI"].tolist() == [
        "0.40 to 0.90",
        "0.35 to 0.80",
        "1.00 to 1.00",
        "–",
    ]
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
    head = {"class_name": "Edema", "threshold": 0.5, "n_changed": 2}
    metrics = pd.DataFrame(
        [
            head | {"metric": "n_positive", "original": 3, "corrected": 5, "change": 2},
            head
            | {
                "metric": "auroc",
                "original": 0.5,
                "original_low": 0.4,
                "original_high": 0.6,
                "original_n": 12,
                "corrected": 0.625,
                "corrected_low": 0.5,
                "corrected_high": 0.75,
                "corrected_n": 12,
                "change": 0.125,
                "change_low": 0.05,
                "change_high": 0.2,
            },
            head
            | {
                "metric": "ppv",
                "original": np.nan,  # called positive on 4 films: too few
                "original_n": 4,
                "corrected": 0.5,
                "corrected_low": 0.3,
                "corrected_high": 0.7,
                "corrected_n": 10,
                "change": np.nan,
            },
        ]
    )
    out = views.corrected_display(metrics).set_index("Metric")
    assert out.loc["Positives"].tolist()[1:] == ["3", "5", "+2"]  # counts stay whole numbers
    assert out.loc["AUROC"].tolist()[1:] == [
        "0.500 (0.40–0.60)",
        "0.625 (0.50–0.75)",
        "+0.125 (+0.05, +0.20)",
    ]
    assert out.loc["PPV"].tolist()[1:] == ["not enough films (n=4)", "0.500 (0.30–0.70)", "–"]
    assert set(out["Finding"]) == {"Edema"}
    assert views.corrected_note(metrics) == "Edema: threshold 0.500, 2 label(s) changed"
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
