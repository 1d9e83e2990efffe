"""Review-session analysis: reader calls, export frame, disagreements, corrected labels and metrics (by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import recall_score, roc_auc_score

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.artifacts.review_store import ReviewStore, Verdict
from cxr_core.evaluation.review import (
    CORRECTED_COLUMNS,
    SESSION_EXPORT_COLUMNS,
    agreement,
    call_of,
    corrected_labels,
    corrected_metrics,
    disagreements,
    film_cases,
    majority_call,
    verdict_for,
    verdict_frame,
)

PROBS = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2]
LABELS = [1, 0, 1, 1, 0, 0]


@pytest.fixture
def run(tmp_path) -> EvalRun:
    frame = pd.DataFrame(
        {
            "image_id": [f"img{i}" for i in range(6)],
            "patient_id": [f"p{i}" for i in range(6)],
            "path": "",
            "prob:Edema": PROBS,
            "label:Edema": LABELS,
            "prob:Mass": [0.1] * 6,
            "label:Mass": [0, 0, 0, 0, 0, np.nan],
        }
    )
    return EvalRun("val", tmp_path, ("Edema", "Mass"), frame)


def test_verdict_for_and_call_of_are_inverse():
    # FP case (model says present, label absent): the reader's call separates the two verdicts cleanly
    assert verdict_for("present", 0, True) == "label_wrong"
    assert verdict_for("absent", 0, True) == "model_wrong"
    assert verdict_for("present", 1, True) == "agree"
    assert verdict_for("unsure", 1, True) == "unsure"
    for call in ("present", "absent", "unsure"):
        for label in (0, 1):
            for model in (True, False):
                legacy = Verdict(1, "i", "c", verdict_for(call, label, model), "", "A", "")
                back = call_of(legacy, label, model)
                assert back == call, (call, label, model)
    assert call_of(Verdict(1, "i", "c", None, "", "A", "", finding="absent"), 1, True) == "absent"


def test_majority_call():
    assert majority_call(["present", "present", "absent"]) == "present"
    assert majority_call(["present", "absent", "unsure"]) == ""
    assert majority_call(["unsure"]) == ""


def session(tmp_path, run):
    store = ReviewStore(tmp_path / "db")
    s = store.create_session(
        "team",
        str(run.dir),
        "val",
        {"thresholds": {"Edema": 0.5, "Mass": 0.5}},
        mode="blind_all",
        classes=["Edema"],
    )
    calls = {
        "img0": {"A": "present", "B": "present", "C": "present"},
        "img1": {"A": "present", "B": "present", "C": "absent"},
        "img3": {"A": "absent", "B": "present"},
        "img4": {"A": "unsure"},
    }
    for image_id, by_reader in calls.items():
        for reader, call in by_reader.items():
            store.record(s.id, image_id, "Edema", reviewer=reader, finding=call, confidence=3)
    store.adjudicate(s.id, "img3", "Edema", 0, "ADJ")
    cases = film_cases(run, ["Edema"], {"Edema": 0.5})
    frame = verdict_frame(store.verdicts(s.id), store.export_rows(s.id), cases, "card")
    return store, s, frame


def test_verdict_frame_has_probability_threshold_outcome_and_truth(tmp_path, run):
    store, s, frame = session(tmp_path, run)
    assert list(frame.columns) == list(SESSION_EXPORT_COLUMNS)
    assert len(frame) == 9
    row = frame[(frame["image_id"] == "img1") & (frame["reviewer"] == "C")].iloc[0]
    assert (
        row["probability"],
        row["threshold"],
        row["ground_truth"],
        row["model_call"],
        row["outcome"],
        row["reader_call"],
        row["mode"],
    ) == (0.8, 0.5, "absent", "present", "FP", "absent", "blind_all")


def test_disagreements_and_corrected_labels(tmp_path, run):
    store, s, frame = session(tmp_path, run)
    listed = disagreements(frame, store.adjudications(s.id))
    # img0: unanimous and equal to the label -> not listed; img4: only an unsure call -> not listed
    assert listed["image_id"].tolist() == ["img1", "img3"]
    assert listed.iloc[0]["majority"] == "present" and pd.isna(listed.iloc[0]["adjudicated"])
    assert listed.iloc[1]["adjudicated"] == 0 and listed.iloc[1]["adjudicator"] == "ADJ"
    corrected = corrected_labels(frame, store.adjudications(s.id))
    assert [tuple(r) for r in corrected.itertuples(index=False)] == [
        ("img0", "Edema", 1, 1, "majority"),
        ("img1", "Edema", 0, 1, "majority"),
        ("img3", "Edema", 1, 0, "adjudicated"),
        ("img4", "Edema", 0, 0, "original"),
    ]


def test_corrected_metrics_on_six_films_say_not_enough_films(tmp_path, run):
    store, s, frame = session(tmp_path, run)
    table = corrected_metrics(
        run,
        {"Edema": 0.5, "Mass": 0.5},
        corrected_labels(frame, store.adjudications(s.id)),
        ["Edema"],
        n_boot=50,
    ).set_index("metric")
    assert list(table.columns) == [c for c in CORRECTED_COLUMNS if c != "metric"]
    assert table.loc["n_positive", ["original", "corrected", "change"]].tolist() == [3, 3, 0]
    assert (table["n_changed"] == 2).all() and (table["class_name"] == "Edema").all()
    # 3 positives, 3 negatives, 3 called each way: every metric is a share of fewer than 10 films
    metrics = table.drop(index="n_positive")
    assert metrics[["original", "corrected", "change", "original_low"]].isna().all().all()
    assert metrics.loc["sensitivity", ["original_n", "corrected_n"]].tolist() == [3, 3]
    assert metrics.loc["ppv", "original_n"] == 3


def test_corrected_metrics_numbers_and_paired_intervals(tmp_path):
    rng = np.random.default_rng(0)
    n = 80
    labels = (rng.random(n) < 0.4).astype(float)
    probs = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, n), 0.01, 0.99)
    frame = pd.DataFrame(
        {
            "image_id": [f"f{i}" for i in range(n)],
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "path": "",
            "prob:Edema": probs,
            "label:Edema": labels,
        }
    )
    run = EvalRun("val", tmp_path, ("Edema",), frame)
    flipped = [i for i in range(n) if (probs[i] >= 0.5) != bool(labels[i])][:6]
    corrected = pd.DataFrame(
        {
            "image_id": [f"f{i}" for i in flipped],
            "class_name": "Edema",
            "original": labels[flipped].astype(int),
            "corrected": 1 - labels[flipped].astype(int),
            "source": "adjudicated",
        }
    )
    table = corrected_metrics(run, {"Edema": 0.5}, corrected, n_boot=300).set_index("metric")
    fixed = labels.copy()
    fixed[flipped] = 1 - fixed[flipped]
    auroc = table.loc["auroc"]
    assert auroc["original"] == pytest.approx(roc_auc_score(labels, probs))
    assert auroc["corrected"] == pytest.approx(roc_auc_score(fixed, probs))
    assert auroc["change"] == pytest.approx(auroc["corrected"] - auroc["original"])
    sens = table.loc["sensitivity"]
    assert sens["corrected"] == pytest.approx(recall_score(fixed, probs >= 0.5))
    assert sens["corrected_n"] == fixed.sum() and sens["original_n"] == labels.sum()
    for name in ("auroc", "sensitivity", "specificity", "ppv", "npv"):
        row = table.loc[name]
        for side in ("original", "corrected", "change"):
            assert row[f"{side}_low"] <= row[side] <= row[f"{side}_high"], (name, side)
    # every flip fixed a model error: the corrected labels agree with the model more
    assert auroc["change"] > 0 and auroc["change_low"] > 0
    assert table.loc["n_positive", "change"] == int(fixed.sum() - labels.sum())


def test_agreement_of_a_session(tmp_path, run):
    store, s, frame = session(tmp_path, run)
    table = agreement(frame, n_boot=50)
    pairs = list(zip(table["rater_a"], table["rater_b"], table["statistic"]))
    assert (
        ("A", "B", "cohen") in pairs
        and ("A", "dataset label", "cohen") in pairs
        and ("C", "model", "cohen") in pairs
    )
    assert ("", "", "fleiss") in pairs
    ab = table[(table["rater_a"] == "A") & (table["rater_b"] == "B")].iloc[0]
    assert ab["n_items"] == 3  # img0, img1, img3 (img4 only A called)
    # three shared films: no kappa, no agreement, and the page says why
    assert np.isnan(ab["kappa"]) and np.isnan(ab["observed_agreement"])
    assert ab["undefined"] == "not enough films (fewer than 10 shared)"


def test_visibility_by_mode():
    from cxr_core.evaluation.review import visible

    assert visible("unblinded", False) == (True, True)
    assert visible("blind_labels", False) == (True, False)
    assert visible("blind_all", False) == (False, False)
    assert visible("blind_all", True) == (True, True)


def test_film_queue_orders_and_blinds(run):
    from cxr_core.evaluation.review import ORDERS, film_queue

    cases = film_cases(run, ["Edema", "Mass"], {"Edema": 0.5, "Mass": 0.5})
    assert film_queue(cases, "unblinded", focus="Edema", outcomes=["FP", "FN"]) == ["img1", "img3"]
    assert film_queue(
        cases, "unblinded", focus="Edema", outcomes=["TP", "FP", "FN", "TN"], order=ORDERS[1]
    ) == ["img5", "img4", "img3", "img2", "img1", "img0"]
    assert (
        film_queue(
            cases, "unblinded", focus="Edema", outcomes=["TP", "FP", "FN", "TN"], order=ORDERS[2]
        )[0]
        == "img3"
    )
    blind = film_queue(cases, "blind_all", focus="Edema", outcomes=["FP"], seed=3)
    assert sorted(blind) == [
        f"img{i}" for i in range(6)
    ]  # filters ignored: they would leak the label
    assert blind == film_queue(cases, "blind_labels", seed=3)


def test_progress_next_unreviewed_and_resume(tmp_path, run):
    from cxr_core.evaluation.review import next_unreviewed, resume_index, reviewed_films

    store, s, frame = session(tmp_path, run)
    cases = film_cases(run, ["Edema"], {"Edema": 0.5})
    assert reviewed_films(store.verdicts(s.id), "A", cases) == {"img0", "img1", "img3", "img4"}
    assert reviewed_films(store.verdicts(s.id), "C", cases) == {"img0", "img1"}
    both = film_cases(run, ["Edema", "Mass"], {"Edema": 0.5, "Mass": 0.5})
    assert reviewed_films(store.verdicts(s.id), "A", both) == set()  # Mass not called yet
    queue = [f"img{i}" for i in range(6)]
    assert next_unreviewed(queue, {"img0", "img1", "img3"}, 0) == 2
    assert next_unreviewed(queue, {"img0", "img1", "img3"}, 5) == 2
    assert next_unreviewed(queue, set(queue), 1) is None
    assert resume_index(queue, (1, "img4")) == 4
    assert resume_index(["img9", "img8"], (5, "img4")) == 1
    assert resume_index(queue, None) == 0


def test_blinding_closes_the_session_views_until_every_film_is_called_or_revealed(tmp_path, run):
    from cxr_core.evaluation.review import reader_blinding

    store, s, _ = session(tmp_path, run)
    cases = film_cases(run, ["Edema"], {"Edema": 0.5})
    a = reader_blinding("blind_all", cases, store.verdicts(s.id), "A")
    assert (a.films, a.left, a.closed) == (6, 2, True)  # A called img0, img1, img3, img4
    assert reader_blinding("blind_all", cases, store.verdicts(s.id), "C").left == 4
    for image_id in ("img2", "img5"):
        store.record(s.id, image_id, "Edema", reviewer="A", finding="absent")
    done = reader_blinding("blind_all", cases, store.verdicts(s.id), "A")
    assert (done.left, done.closed) == (0, False)
    when = store.reveal(s.id, "C")
    revealed = reader_blinding(
        "blind_all", cases, store.verdicts(s.id), "C", store.revealed_at(s.id, "C")
    )
    assert (revealed.left, revealed.revealed_at, revealed.closed) == (4, when, False)
    nobody = reader_blinding("blind_all", cases, store.verdicts(s.id), "")
    assert (nobody.left, nobody.closed) == (6, True)  # a reader without a name has read nothing
    assert not reader_blinding("unblinded", cases, [], "B").closed  # unblinded: open as before
