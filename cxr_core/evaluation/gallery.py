"""The films behind a number: which cases make a table row, a confusion-matrix cell or an
operating point, most wrong first, with what readers called on them.

A :class:`GallerySelection` names what was clicked: a finding (its row), an outcome cell
(TP / FP / FN / TN of that finding, or a multiclass confusion-matrix cell) and the threshold
(None: the calls the report counted, out of fold where it was cross-fitted, so a cell's films
are exactly its count). :func:`gallery_films` lists them sorted by how wrong the model was:
``|label - probability|`` for a finding (a missed finding scored 0.02 comes before one scored
0.45), ``1 - probability of the true class`` in a multiclass cell. :func:`send_to_review`
starts a review session on exactly those films.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxr_core.artifacts.catalog import OUTCOMES, EvalRun
from cxr_core.artifacts.review_store import ReviewSession, ReviewStore
from cxr_core.errors import ReviewStoreError, UnknownClassError
from cxr_core.evaluation.review import (
    FILMS_FILTER,
    call_of,
    film_cases,
    reader_blinding,
    session_classes,
    session_thresholds,
)

OUTCOME_WORDS = {
    "TP": "true positives",
    "FP": "false positives",
    "FN": "false negatives",
    "TN": "true negatives",
}
GALLERY_COLUMNS = (
    "row",
    "image_id",
    "patient_id",
    "path",
    "prob",
    "label",
    "called",
    "outcome",
    "wrongness",
)


@dataclass(frozen=True)
class GallerySelection:
    """What a gallery shows: one finding's films with the given outcomes, at ``threshold`` (None: the
    report's own calls), or in a multiclass model the films of ``class_name`` called ``predicted``."""

    class_name: str
    outcomes: tuple[str, ...] = OUTCOMES
    threshold: float | None = None
    predicted: str | None = None

    def describe(self) -> str:
        if self.predicted is not None:
            return f"{self.class_name} films called {self.predicted}"
        which = (
            "all films"
            if set(self.outcomes) == set(OUTCOMES)
            else " and ".join(OUTCOME_WORDS.get(o, o) for o in self.outcomes)
        )
        at = (
            "the report's operating point"
            if self.threshold is None
            else f"threshold {self.threshold:.3f}"
        )
        return f"{self.class_name}: {which} at {at}"


def _multiclass_cell(run: EvalRun, selection: GallerySelection, c: int) -> pd.DataFrame:
    labels, scores = run.labels(), run.scores()
    if selection.predicted not in run.classes:
        raise UnknownClassError(
            f"'{selection.predicted}' is not a class of this run ({', '.join(run.classes)})"
        )
    predicted = np.argmax(scores, axis=1)
    rows = np.nonzero((labels[:, c] == 1) & (predicted == run.classes.index(selection.predicted)))[
        0
    ]
    correct = selection.predicted == selection.class_name
    return pd.DataFrame(
        {
            "row": rows,
            "prob": scores[rows, c],
            "label": 1.0,
            "called": correct,
            "outcome": f"called {selection.predicted}",
            "wrongness": 1.0 - scores[rows, c],
        }
    )


def _finding(
    run: EvalRun, selection: GallerySelection, c: int, decisions: np.ndarray
) -> pd.DataFrame:
    labels, probs = run.labels()[:, c], run.scores()[:, c]
    called = decisions[:, c] if selection.threshold is None else probs >= selection.threshold
    rows = np.nonzero(~np.isnan(labels))[0]
    truth, call = labels[rows] == 1, called[rows]
    outcome = np.select([truth & call, ~truth & call, truth & ~call], ["TP", "FP", "FN"], "TN")
    frame = pd.DataFrame(
        {
            "row": rows,
            "prob": probs[rows],
            "label": labels[rows],
            "called": call,
            "outcome": outcome,
            "wrongness": np.abs(labels[rows] - probs[rows]),
        }
    )
    return frame[frame["outcome"].isin(selection.outcomes)]


def gallery_films(run: EvalRun, selection: GallerySelection, decisions: np.ndarray) -> pd.DataFrame:
    """The selection's films (:data:`GALLERY_COLUMNS`), most wrong first (ties: by image id).

    ``decisions`` (N, C) are the calls the report counted (:func:`~cxr_core.evaluation.
    saved_runs.run_decisions`); a selection with its own threshold ignores them.
    """
    if selection.class_name not in run.classes:
        raise UnknownClassError(
            f"'{selection.class_name}' is not a class of this run ({', '.join(run.classes)})"
        )
    c = run.classes.index(selection.class_name)
    if selection.predicted is not None:
        films = _multiclass_cell(run, selection, c)
    else:
        films = _finding(run, selection, c, decisions)
    frame = run.predictions
    films["image_id"] = frame["image_id"].astype(str).to_numpy()[films["row"]]
    films["patient_id"] = (
        frame["patient_id"].astype(str).to_numpy()[films["row"]] if "patient_id" in frame else ""
    )
    films["path"] = (
        frame["path"].fillna("").astype(str).to_numpy()[films["row"]] if "path" in frame else ""
    )
    films = films.sort_values(["wrongness", "image_id"], ascending=[False, True], kind="stable")
    return films[list(GALLERY_COLUMNS)].reset_index(drop=True)


def _session_calls(
    store: ReviewStore, session: ReviewSession, run: EvalRun, class_name: str, multilabel: bool
) -> dict[str, dict[str, str]]:
    thresholds, _ = session_thresholds(session, {})
    cases = film_cases(run, [class_name], thresholds, multilabel=multilabel)
    truth = dict(zip(cases["image_id"], zip(cases["label"], cases["model_positive"])))
    out: dict[str, dict[str, str]] = {}
    for verdict in store.verdicts(session.id):
        if verdict.class_name != class_name or verdict.image_id not in truth:
            continue
        label, model_positive = truth[verdict.image_id]
        call = call_of(verdict, label, bool(model_positive))
        if call:
            out.setdefault(verdict.image_id, {})[verdict.reviewer] = call
    return out


def _open_to(
    store: ReviewStore, session: ReviewSession, run: EvalRun, viewer: str, multilabel: bool
) -> bool:
    """A blinded session's calls show only to a viewer who has read all its films or revealed it."""
    if session.mode == "unblinded":
        return True
    if not viewer:
        return False
    thresholds, _ = session_thresholds(session, {})
    cases = film_cases(run, session_classes(session, run), thresholds, multilabel=multilabel)
    mine = store.verdicts(session.id, reviewer=viewer)
    return not reader_blinding(
        session.mode, cases, mine, viewer, store.revealed_at(session.id, viewer)
    ).closed


def open_sessions(
    store: ReviewStore, checkpoint: str, run: EvalRun, *, viewer: str = "", multilabel: bool = True
) -> list[ReviewSession]:
    """The review sessions of this checkpoint and split whose calls ``viewer`` may see (newest first)."""
    return [
        s
        for s in store.sessions(checkpoint)
        if s.eval_run == run.split and _open_to(store, s, run, viewer, multilabel)
    ]


def reader_calls(
    store: ReviewStore,
    checkpoint: str,
    run: EvalRun,
    class_name: str,
    *,
    viewer: str = "",
    multilabel: bool = True,
) -> dict[str, str]:
    """Per film, the readers' calls on ``class_name`` in every review session of this checkpoint and
    split ("A: present · B: absent"), from the sessions open to ``viewer`` (blinded sessions stay
    closed to a reader still reading them, as on the Review page)."""
    merged: dict[str, dict[str, str]] = {}
    for session in open_sessions(store, checkpoint, run, viewer=viewer, multilabel=multilabel):
        for image_id, calls in _session_calls(store, session, run, class_name, multilabel).items():
            merged.setdefault(image_id, {}).update(calls)
    return {
        image_id: " · ".join(f"{reader}: {call}" for reader, call in sorted(calls.items()))
        for image_id, calls in merged.items()
    }


def send_to_review(
    store: ReviewStore,
    checkpoint: str,
    split: str,
    selection: GallerySelection,
    films: Sequence[str],
    *,
    name: str,
    mode: str,
    thresholds: Mapping[str, float],
    threshold_set: str,
) -> ReviewSession:
    """A new review session on exactly ``films``, calling the selection's finding, with the
    thresholds in force (so outcomes stay the ones its readers see)."""
    if not films:
        raise ReviewStoreError(
            "the gallery is empty: there are no films to send to a review session"
        )
    return store.create_session(
        name,
        checkpoint,
        split,
        {
            "thresholds": dict(thresholds),
            "threshold_set": threshold_set,
            FILMS_FILTER: [str(f) for f in films],
            "from": selection.describe(),
        },
        mode=mode,
        classes=[selection.class_name],
    )
