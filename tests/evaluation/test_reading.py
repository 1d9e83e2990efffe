"""One reader at one film: calls as they stand (drafts over verdicts), changes kept as drafts, saving a film."""

from __future__ import annotations

import pandas as pd
import pytest

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.errors import ReviewStoreError
from cxr_core.evaluation.reading import apply_edits, change, draft_films, film_calls, save_film
from cxr_core.evaluation.review import agreement, corrected_labels, reviewed_films, verdict_frame

CLASSES = ("Edema", "Mass", "Nodule")


@pytest.fixture
def store(tmp_path) -> ReviewStore:
    return ReviewStore(tmp_path / "reviews")


def cases(films=("a.png", "b.png")) -> pd.DataFrame:
    """Every film has all three findings; Edema is labelled present and called by the model."""
    rows = []
    for f in films:
        for c in CLASSES:
            positive = c == "Edema"
            rows.append(
                {
                    "image_id": f,
                    "class_name": c,
                    "row": 0,
                    "prob": 0.8 if positive else 0.1,
                    "threshold": 0.5,
                    "label": 1.0 if positive else 0.0,
                    "model_positive": positive,
                    "outcome": "TP" if positive else "TN",
                }
            )
    return pd.DataFrame(rows)


def film(store, sid, reader, image_id="a.png", revealed=False):
    return film_calls(
        CLASSES,
        store.verdicts(sid, reviewer=reader),
        store.drafts(sid, reader),
        image_id,
        revealed=revealed,
    )


def test_changes_are_drafts_until_the_film_is_saved(store):
    s = store.create_session("s", "ckpt", "val", classes=list(CLASSES))
    calls = apply_edits(
        store, s.id, "a.png", "AB", film(store, s.id, "AB"), {"Edema": {"finding": "present"}}
    )
    assert [c.call.finding for c in calls] == ["present", None, None]
    assert [d.class_name for d in store.drafts(s.id, "AB")] == ["Edema"]
    assert store.verdicts(s.id) == []
    result = save_film(store, s.id, "a.png", "AB", calls, cases().query("image_id == 'a.png'"))
    assert result.saved == ("Edema",) and result.missing == ("Mass", "Nodule")
    assert not result.complete and "still to call on this film: Mass, Nodule" in result.message()
    (saved,) = store.verdicts(s.id)
    assert (saved.finding, saved.verdict) == ("present", "agree")  # what the call implies
    assert store.drafts(s.id, "AB") == []
    calls = apply_edits(
        store,
        s.id,
        "a.png",
        "AB",
        film(store, s.id, "AB"),
        {"Mass": {"finding": "present"}, "Nodule": {"finding": "absent", "confidence": 5}},
    )
    result = save_film(store, s.id, "a.png", "AB", calls, cases().query("image_id == 'a.png'"))
    assert result.complete and result.saved == ("Mass", "Nodule") and result.message() == ""
    mine = {v.class_name: v for v in store.verdicts(s.id, reviewer="AB")}
    assert mine["Mass"].verdict == "model_wrong" and mine["Nodule"].confidence == 5
    assert len(store.history(s.id, "a.png", "Edema", "AB")) == 1  # unchanged: not saved again


def test_a_change_back_to_the_saved_call_discards_the_draft(store):
    s = store.create_session("s", "ckpt", "val")
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="absent", note="clear")
    (edema, *_) = film(store, s.id, "AB")
    changed = change(store, s.id, "a.png", "AB", edema, finding="present")
    assert changed.unsaved and changed.call.note == "clear"  # the saved note is kept in the draft
    back = change(store, s.id, "a.png", "AB", changed, finding="absent")
    assert not back.unsaved and store.drafts(s.id, "AB") == []
    marked = change(store, s.id, "a.png", "AB", back, point=(0.25, 0.75))
    assert marked.unsaved and store.drafts(s.id, "AB")[0].point == (0.25, 0.75)
    assert draft_films(store.drafts(s.id, "AB")) == {"a.png"}


def test_drafts_are_per_reader_and_never_count_as_verdicts(store):
    s = store.create_session("s", "ckpt", "val", classes=list(CLASSES))
    store.record(s.id, "a.png", "Edema", reviewer="CD", finding="present")
    apply_edits(
        store,
        s.id,
        "a.png",
        "AB",
        film(store, s.id, "AB"),
        {c: {"finding": "absent"} for c in CLASSES},
    )
    assert [c.call.finding for c in film(store, s.id, "CD")] == ["present", None, None]
    frame = verdict_frame(
        store.verdicts(s.id), store.export_rows(s.id), cases(), "card"
    )  # agreement, export and corrected labels read this frame
    assert frame["reviewer"].tolist() == ["CD"]
    assert set(agreement(frame, n_boot=20)["rater_a"]) | set(
        agreement(frame, n_boot=20)["rater_b"]
    ) <= {"CD", "dataset label", "model"}
    assert corrected_labels(frame)["image_id"].tolist() == ["a.png"]
    assert reviewed_films(store.verdicts(s.id, reviewer="AB"), "AB", cases()) == set()


def test_edits_from_the_browser_are_checked(store):
    s = store.create_session("s", "ckpt", "val")
    calls = film(store, s.id, "AB")
    unchanged = apply_edits(
        store,
        s.id,
        "a.png",
        "AB",
        calls,
        {"Unknown": {"finding": "present"}, "Edema": {"verdict": "agree", "reviewer": "CD"}},
    )
    assert unchanged == calls and store.drafts(s.id, "AB") == []
    with pytest.raises(ReviewStoreError, match="not one of"):
        apply_edits(store, s.id, "a.png", "AB", calls, {"Edema": {"finding": "yes"}})
    with pytest.raises(ReviewStoreError, match="confidence"):
        apply_edits(store, s.id, "a.png", "AB", calls, {"Edema": {"confidence": 9}})
    notes = apply_edits(
        store, s.id, "a.png", "AB", calls, {"Edema": {"note": None, "reason": None}}
    )
    assert notes == calls  # empty note and reason: nothing changed


def test_after_a_reveal_uncalled_findings_are_frozen(store):
    s = store.create_session("blind", "ckpt", "val", mode="blind_all", classes=list(CLASSES))
    apply_edits(
        store, s.id, "a.png", "AB", film(store, s.id, "AB"), {"Mass": {"finding": "absent"}}
    )  # a draft made before the reveal
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="present")
    store.reveal(s.id, "AB")
    calls = film(store, s.id, "AB", revealed=True)
    assert [c.frozen for c in calls] == [False, True, True]
    with pytest.raises(ReviewStoreError, match="revealed"):
        change(store, s.id, "a.png", "AB", calls[2], finding="present")
    calls[0:1] = [change(store, s.id, "a.png", "AB", calls[0], finding="unsure")]
    result = save_film(store, s.id, "a.png", "AB", calls, cases().query("image_id == 'a.png'"))
    assert result.saved == ("Edema",) and result.frozen == ("Mass",) and result.complete
    assert "Not saved (Mass): you revealed" in result.message()
    assert store.verdict(s.id, "a.png", "Edema", "AB").finding == "unsure"
