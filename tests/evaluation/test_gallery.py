"""Galleries: the films behind a count are exactly the count's films, most wrong first; readers'
calls respect blinding; a selection becomes a review session on exactly those films."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.artifacts.catalog import load_eval_run, read_entry
from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.errors import ReviewStoreError
from cxr_core.evaluation.gallery import (
    GallerySelection,
    gallery_films,
    reader_calls,
    send_to_review,
)
from cxr_core.evaluation.review import film_cases, session_films
from cxr_core.evaluation.run import score_predictions, write_evaluation
from cxr_core.evaluation.saved_runs import run_decisions
from cxr_core.models.checkpoint import read_model_card
from tests.checkpoint_fixtures import MULTICLASS_CLASSES, build_checkpoint_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    ckpt = build_checkpoint_dir(root / "ckpts", "ml", n_cases=120, seed=5)
    run = load_eval_run(read_entry(ckpt), "val")
    card = read_model_card(ckpt / "model.safetensors")
    report = score_predictions(run.predictions, card, n_boot=0, seed=3, thresholds="max_f1")
    write_evaluation(run.dir, run.predictions, report)
    mc = build_checkpoint_dir(
        root / "ckpts", "mc", classes=MULTICLASS_CLASSES, task="multiclass", seed=3
    )
    return {
        "ckpt": ckpt,
        "run": load_eval_run(read_entry(ckpt), "val"),
        "mc": load_eval_run(read_entry(mc), "val"),
    }


def test_each_outcome_cell_holds_exactly_the_reports_count_most_wrong_first(runs):
    run = runs["run"]
    calls = run_decisions(run, multilabel=True)
    for name in run.classes:
        entry = run.report.per_class[name]
        for outcome in ("TP", "FP", "FN", "TN"):
            films = gallery_films(run, GallerySelection(name, (outcome,)), calls)
            assert len(films) == getattr(entry, outcome.lower()), (name, outcome)
            assert (films["outcome"] == outcome).all()
            assert films["wrongness"].is_monotonic_decreasing
        everything = gallery_films(run, GallerySelection(name), calls)
        assert len(everything) == entry.n_pos + entry.n_neg
        top = everything.iloc[0]
        assert top["wrongness"] == pytest.approx(abs(top["label"] - top["prob"]))


def test_a_threshold_of_its_own_replaces_the_reports_calls(runs):
    run = runs["run"]
    name = run.classes[0]
    films = gallery_films(
        run, GallerySelection(name, ("FP",), threshold=0.3), run_decisions(run, True)
    )
    labels, probs = run.labels()[:, 0], run.scores()[:, 0]
    assert len(films) == int(np.sum((probs >= 0.3) & (labels == 0)))
    assert GallerySelection(name, ("FP", "FN"), 0.3).describe() == (
        f"{name}: false positives and false negatives at threshold 0.300"
    )


def test_a_multiclass_cell_holds_the_confusion_matrix_count(runs):
    run = runs["mc"]
    matrix = run.report.multiclass.confusion_matrix
    calls = run_decisions(run, multilabel=False)
    for i, true in enumerate(run.classes):
        for j, predicted in enumerate(run.classes):
            films = gallery_films(run, GallerySelection(true, predicted=predicted), calls)
            assert len(films) == matrix[i][j]
            assert (films["outcome"] == f"called {predicted}").all()
            if len(films):
                assert films["wrongness"].is_monotonic_decreasing


def test_readers_calls_show_unless_the_viewer_is_still_reading_blinded(runs, tmp_path):
    run, ckpt = runs["run"], str(runs["ckpt"])
    store = ReviewStore(tmp_path / "db")
    name = run.classes[0]
    films = run.predictions["image_id"].astype(str).tolist()
    open_session = store.create_session("open", ckpt, "val", classes=[name])
    store.record(open_session.id, films[0], name, reviewer="A", finding="present")
    store.record(open_session.id, films[0], name, reviewer="B", finding="absent")
    blind = store.create_session("blind", ckpt, "val", mode="blind_all", classes=[name])
    store.record(blind.id, films[1], name, reviewer="C", finding="unsure")
    assert reader_calls(store, ckpt, run, name) == {films[0]: "A: present · B: absent"}
    assert films[1] not in reader_calls(store, ckpt, run, name, viewer="C")  # C is still reading
    store.reveal(blind.id, "C")
    assert reader_calls(store, ckpt, run, name, viewer="C")[films[1]] == "C: unsure"


def test_send_to_review_starts_a_session_on_exactly_the_gallery(runs, tmp_path):
    run, ckpt = runs["run"], str(runs["ckpt"])
    store = ReviewStore(tmp_path / "db")
    name = run.classes[0]
    selection = GallerySelection(name, ("FP",))
    films = gallery_films(run, selection, run_decisions(run, True))["image_id"].tolist()
    session = send_to_review(
        store,
        ckpt,
        "val",
        selection,
        films,
        name="FP check",
        mode="blind_all",
        thresholds={name: 0.5},
        threshold_set="card",
    )
    assert session_films(session) == tuple(films) and session.classes == (name,)
    assert session.filters["from"] == f"{name}: false positives at the report's operating point"
    cases = film_cases(run, [name], {name: 0.5}, films=session_films(session))
    assert set(cases["image_id"]) == set(films)
    with pytest.raises(ReviewStoreError, match="no films"):
        send_to_review(
            store,
            ckpt,
            "val",
            selection,
            [],
            name="x",
            mode="unblinded",
            thresholds={},
            threshold_set="",
        )
