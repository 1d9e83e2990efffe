"""What a review session teaches: readers' calls next to the model and the label, agreement, corrected metrics.

Each verdict becomes a *reader call* on one finding of one film: ``present``, ``absent`` or
``unsure``. New verdicts store the call itself; verdicts of the first, single-reader release
only said what the reader thought of the model, and their call is read back from the model's
call and the label (agree = the model's call, model wrong = the opposite of it, label wrong
= the opposite of the label).

Corrected labels: an adjudicated label where there is one, otherwise the strict majority of
the readers' present/absent calls (unsure calls abstain; a tie keeps the dataset label).
:func:`corrected_metrics` then scores the evaluation run with the original and the corrected
labels side by side, using :mod:`cxr_core.metrics`, with patient-level intervals and the change's
paired interval. Small samples say so: a kappa or agreement over fewer than
:data:`~cxr_core.metrics.agreement.MIN_FILMS` shared films, or a metric that is a share of fewer
than :data:`~cxr_core.metrics.MIN_POSITIVES` films, has no value ("not enough films").

Blinded sessions: what a session says about every film (agreement with the label and the model,
disagreements, corrected labels and metrics, the export with labels and probabilities) stays
closed to a reader until they have called every film, or revealed it (:class:`Blinding`).

A session stores the thresholds in force when it was started (``filters["thresholds"]``),
so the model's calls and outcomes are those its readers saw, whatever set is active later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxr_core.access import roles
from cxr_core.artifacts import audit_log
from cxr_core.artifacts.catalog import EvalRun, load_eval_run, read_entry, review_cases
from cxr_core.artifacts.review_store import (
    EXPORT_COLUMNS,
    Adjudication,
    ReviewSession,
    ReviewStore,
    Verdict,
)
from cxr_core.errors import AccessDeniedError, CheckpointError, ReviewStoreError
from cxr_core.evaluation.saved_runs import run_groups
from cxr_core.metrics import MIN_POSITIVES
from cxr_core.metrics.agreement import MIN_FILMS, NO_VARIATION, TOO_FEW, agreement_table
from cxr_core.metrics.confusion import decision_counts, metric_denominators
from cxr_core.metrics.paired import paired_bootstrap
from cxr_core.utils.csv_safe import write_records_csv

logger = logging.getLogger(__name__)

LABEL_RATER, MODEL_RATER = "dataset label", "model"
EXPORT_EXTRA = (
    "probability",
    "threshold",
    "threshold_set",
    "ground_truth",
    "model_call",
    "outcome",
    "reader_call",
)
SESSION_EXPORT_COLUMNS = (*EXPORT_COLUMNS, *EXPORT_EXTRA)
KAPPA_UNDEFINED = {
    TOO_FEW: f"not enough films (fewer than {MIN_FILMS} shared)",
    NO_VARIATION: "undefined: every call the same",
}
"""What the Review page and ``cxr review agreement`` say instead of a kappa that has no value."""


def verdict_for(call: str, label: float | None, model_positive: bool) -> str:
    """The verdict on the model implied by a reader's call (what the single-reader layout stored)."""
    if call == "unsure":
        return "unsure"
    positive = call == "present"
    if positive != bool(model_positive):
        return "model_wrong"
    if label is not None and not pd.isna(label) and positive != bool(label):
        return "label_wrong"
    return "agree"


def call_of(verdict: Verdict, label: float | None, model_positive: bool) -> str | None:
    """A verdict's reader call; legacy verdicts (no call stored) are read back from model and label."""
    if verdict.finding is not None:
        return verdict.finding
    if verdict.verdict == "unsure":
        return "unsure"
    if verdict.verdict == "agree":
        return "present" if model_positive else "absent"
    if verdict.verdict == "model_wrong":
        return "absent" if model_positive else "present"
    if verdict.verdict == "label_wrong" and label is not None and not pd.isna(label):
        return "absent" if label == 1 else "present"
    return None


def session_thresholds(
    session: ReviewSession, fallback: Mapping[str, float], fallback_name: str = ""
) -> tuple[dict[str, float], str]:
    """(thresholds, set name) the session's readers saw: stored in the session, else ``fallback``."""
    stored = session.filters.get("thresholds")
    if isinstance(stored, Mapping) and stored:
        return {str(k): float(v) for k, v in stored.items()}, str(
            session.filters.get("threshold_set", "")
        )
    return {str(k): float(v) for k, v in fallback.items()}, fallback_name


FILMS_FILTER = "films"
"""Session filter key: the films a session was started on (a gallery's selection); absent = every film."""


def session_films(session: ReviewSession) -> tuple[str, ...] | None:
    """The films a session covers: those it was started on, or None for every film of its run."""
    films = session.filters.get(FILMS_FILTER)
    return tuple(str(f) for f in films) if isinstance(films, list) and films else None


def session_classes(session: ReviewSession, run: EvalRun) -> tuple[str, ...]:
    """The findings a session's readers call: its own list, else every class of the run."""
    chosen = tuple(c for c in session.classes if c in run.classes)
    return chosen or tuple(run.classes)


def film_cases(
    run: EvalRun,
    classes: Sequence[str],
    thresholds: Mapping[str, float],
    *,
    multilabel: bool = True,
    films: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (film, finding) with a known label: image_id, class_name, row, prob, threshold, label,
    model_positive, outcome (TP/FP/FN/TN at the thresholds); only ``films`` when given."""
    parts = []
    keep = set(films) if films is not None else None
    for class_name in classes:
        threshold = float(thresholds.get(class_name, 0.5))
        cases = review_cases(run, class_name, threshold, multilabel=multilabel)
        if keep is not None:
            cases = cases[cases["image_id"].isin(keep)]
        parts.append(
            pd.DataFrame(
                {
                    "image_id": cases["image_id"],
                    "class_name": class_name,
                    "row": cases["row"],
                    "prob": cases["prob"],
                    "threshold": threshold if multilabel else np.nan,
                    "label": cases["label"],
                    "model_positive": cases["predicted"].astype(bool),
                    "outcome": cases["outcome"],
                }
            )
        )
    if not parts:
        return pd.DataFrame(
            columns=[
                "image_id",
                "class_name",
                "row",
                "prob",
                "threshold",
                "label",
                "model_positive",
                "outcome",
            ]
        )
    return pd.concat(parts, ignore_index=True)


def verdict_frame(
    verdicts: Sequence[Verdict],
    export_rows: Sequence[Mapping],
    cases: pd.DataFrame,
    threshold_set: str = "",
) -> pd.DataFrame:
    """Export rows (one per reader verdict) with the case's probability, threshold, label, model call,
    outcome and the reader's call; columns :data:`SESSION_EXPORT_COLUMNS`."""
    frame = pd.DataFrame(list(export_rows), columns=list(EXPORT_COLUMNS))
    if frame.empty:
        return pd.DataFrame(columns=list(SESSION_EXPORT_COLUMNS))
    lookup = cases.drop_duplicates(["image_id", "class_name"]).set_index(["image_id", "class_name"])
    keyed = {(v.image_id, v.class_name, v.reviewer): v for v in verdicts}
    extra = []
    for row in frame.itertuples(index=False):
        key = (row.image_id, row.class_name)
        case = lookup.loc[key] if key in lookup.index else None
        label = float(case["label"]) if case is not None else float("nan")
        model_positive = bool(case["model_positive"]) if case is not None else None
        verdict = keyed.get((row.image_id, row.class_name, row.reviewer))
        call = (
            call_of(verdict, label, bool(model_positive))
            if verdict is not None and case is not None
            else (verdict.finding if verdict is not None else None)
        )
        extra.append(
            {
                "probability": float(case["prob"]) if case is not None else np.nan,
                "threshold": float(case["threshold"]) if case is not None else np.nan,
                "threshold_set": threshold_set,
                "ground_truth": ("present" if label == 1 else "absent") if case is not None else "",
                "model_call": ("present" if model_positive else "absent")
                if case is not None
                else "",
                "outcome": case["outcome"] if case is not None else "",
                "reader_call": call or "",
            }
        )
    return pd.concat([frame, pd.DataFrame(extra, index=frame.index)], axis=1)[
        list(SESSION_EXPORT_COLUMNS)
    ]


def ratings(frame: pd.DataFrame) -> pd.DataFrame:
    """Long ratings (item, class_name, rater, rating) for :func:`agreement_table`: every reader's call,
    plus the dataset label and the model's call on every item a reader called."""
    called = frame[frame["reader_call"].astype(str) != ""]
    readers = pd.DataFrame(
        {
            "item": called["image_id"],
            "class_name": called["class_name"],
            "rater": called["reviewer"],
            "rating": called["reader_call"],
        }
    )
    items = called[called["outcome"].astype(str) != ""].drop_duplicates(["image_id", "class_name"])
    refs = [
        pd.DataFrame(
            {
                "item": items["image_id"],
                "class_name": items["class_name"],
                "rater": name,
                "rating": items[column],
            }
        )
        for name, column in ((LABEL_RATER, "ground_truth"), (MODEL_RATER, "model_call"))
    ]
    return pd.concat([readers, *refs], ignore_index=True)


def agreement(frame: pd.DataFrame, *, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Kappa table of a session's verdict frame (readers pairwise and vs label and model; Fleiss for 3+);
    ``undefined`` says in words why a kappa has no value (:data:`KAPPA_UNDEFINED`), '' when it has one."""
    table = agreement_table(
        ratings(frame), references=(LABEL_RATER, MODEL_RATER), n_boot=n_boot, seed=seed
    )
    table["undefined"] = table["undefined"].map(lambda code: KAPPA_UNDEFINED.get(code, code))
    return table


def kappa_text(kappa: float, undefined: str) -> str:
    """A kappa as shown to readers: three decimals, or why it is undefined (never 'nan' or 'None')."""
    if undefined:
        return undefined
    return "undefined" if pd.isna(kappa) else f"{kappa:.3f}"


def disagreements(frame: pd.DataFrame, adjudications: Sequence[Adjudication] = ()) -> pd.DataFrame:
    """Findings to adjudicate: readers' calls differ, or they agree with each other but not with the label.

    Columns: image_id, class_name, calls ({reader: call}), ground_truth, model_call, probability,
    majority (present/absent/''), adjudicated (1/0/None), adjudicator. Sorted by image, class.
    """
    decided = {(a.image_id, a.class_name): a for a in adjudications}
    rows = []
    called = frame[frame["reader_call"].astype(str) != ""]
    for (image_id, class_name), group in called.groupby(["image_id", "class_name"], sort=True):
        calls = dict(zip(group["reviewer"], group["reader_call"]))
        firm = {c for c in calls.values() if c != "unsure"}
        truth = group["ground_truth"].iloc[0]
        if len(set(calls.values())) <= 1 and (not firm or firm == {truth}):
            continue
        entry = decided.get((image_id, class_name))
        rows.append(
            {
                "image_id": image_id,
                "class_name": class_name,
                "calls": calls,
                "ground_truth": truth,
                "model_call": group["model_call"].iloc[0],
                "probability": group["probability"].iloc[0],
                "majority": majority_call(calls.values()),
                "adjudicated": entry.label if entry else None,
                "adjudicator": entry.adjudicator if entry else "",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "image_id",
            "class_name",
            "calls",
            "ground_truth",
            "model_call",
            "probability",
            "majority",
            "adjudicated",
            "adjudicator",
        ],
    )


def majority_call(calls) -> str:
    """``present``/``absent`` when a strict majority of the firm calls says so, else ``''``."""
    calls = list(calls)
    present, absent = calls.count("present"), calls.count("absent")
    return "present" if present > absent else "absent" if absent > present else ""


def corrected_labels(
    frame: pd.DataFrame, adjudications: Sequence[Adjudication] = ()
) -> pd.DataFrame:
    """image_id, class_name, original (1/0), corrected (1/0), source (adjudicated / majority / original),
    for every finding some reader called or an adjudicator decided."""
    decided = {(a.image_id, a.class_name): a.label for a in adjudications}
    rows = []
    called = frame[
        (frame["reader_call"].astype(str) != "") & (frame["ground_truth"].astype(str) != "")
    ]
    groups = {key: group for key, group in called.groupby(["image_id", "class_name"], sort=True)}
    truths = {
        key: (1 if g["ground_truth"].iloc[0] == "present" else 0) for key, g in groups.items()
    }
    for key in sorted(groups):
        original = truths[key]
        if key in decided:
            rows.append((*key, original, int(decided[key]), "adjudicated"))
            continue
        vote = majority_call(groups[key]["reader_call"])
        rows.append(
            (
                *key,
                original,
                (1 if vote == "present" else 0) if vote else original,
                "majority" if vote else "original",
            )
        )
    return pd.DataFrame(rows, columns=["image_id", "class_name", "original", "corrected", "source"])


CORRECTED_METRICS = ("auroc", "sensitivity", "specificity", "ppv", "npv")
CORRECTED_COLUMNS = (
    "class_name",
    "threshold",
    "n_changed",
    "metric",
    "original",
    "original_low",
    "original_high",
    "original_n",
    "corrected",
    "corrected_low",
    "corrected_high",
    "corrected_n",
    "change",
    "change_low",
    "change_high",
)
"""One row per finding and metric (``n_positive`` first): the value with the dataset labels and with
the corrected ones, each with its interval and the number of films it is a share of (``*_n``), and the
change with its paired interval. A side with fewer than ``MIN_POSITIVES`` films has no value and no
interval (NaN): "not enough films"."""


def relabelled(run: EvalRun, corrected: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The run's labels with the corrected ones put in, and how many changed per class."""
    fixed = run.labels().copy()
    index = {image_id: i for i, image_id in enumerate(run.predictions["image_id"].astype(str))}
    column = {c: j for j, c in enumerate(run.classes)}
    changed = np.zeros(len(run.classes), dtype=int)
    for row in corrected.itertuples(index=False):
        i, j = index.get(str(row.image_id)), column.get(row.class_name)
        if i is None or j is None:
            continue
        changed[j] += int(fixed[i, j] != row.corrected)
        fixed[i, j] = float(row.corrected)
    return fixed, changed


def _enough(values: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.where(n >= MIN_POSITIVES, values, np.nan)


def _metric_rows(name: str, c: int, diff, n: tuple[np.ndarray, np.ndarray]) -> dict:
    ok_a, ok_b = n[0][c] >= MIN_POSITIVES, n[1][c] >= MIN_POSITIVES
    both = ok_a and ok_b
    return {
        "metric": name,
        "original": diff.first[c] if ok_a else np.nan,
        "original_low": diff.first_low[c] if ok_a else np.nan,
        "original_high": diff.first_high[c] if ok_a else np.nan,
        "original_n": int(n[0][c]),
        "corrected": diff.second[c] if ok_b else np.nan,
        "corrected_low": diff.second_low[c] if ok_b else np.nan,
        "corrected_high": diff.second_high[c] if ok_b else np.nan,
        "corrected_n": int(n[1][c]),
        "change": diff.second[c] - diff.first[c] if both else np.nan,
        "change_low": -diff.high[c] if both else np.nan,
        "change_high": -diff.low[c] if both else np.nan,
    }


def corrected_metrics(
    run: EvalRun,
    thresholds: Mapping[str, float],
    corrected: pd.DataFrame,
    classes: Sequence[str] | None = None,
    *,
    n_boot: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Per finding: AUROC and sensitivity/specificity/PPV/NPV at the threshold over every case of
    the run, with the dataset labels and with the corrected ones, each with a patient-level
    bootstrap interval, and the change with its paired interval (the same resamples on both
    sides); columns :data:`CORRECTED_COLUMNS`. A metric over fewer than ``MIN_POSITIVES`` films
    (positives for sensitivity, films called positive for PPV, ...) is left out on that side."""
    labels, scores = run.labels(), run.scores()
    fixed, changed = relabelled(run, corrected)
    t = np.array([float(thresholds.get(c, 0.5)) for c in run.classes])
    calls = scores >= t
    paired = paired_bootstrap(
        (labels, scores),
        (fixed, scores),
        CORRECTED_METRICS,
        decisions=(calls, calls),
        groups=run_groups(run),
        n_boot=n_boot,
        seed=seed,
    )
    n = tuple(metric_denominators(decision_counts(y, calls)) for y in (labels, fixed))
    wanted = set(classes) if classes is not None else set(run.classes)
    rows = []
    for c, name in enumerate(run.classes):
        if name not in wanted:
            continue
        head = {"class_name": name, "threshold": t[c], "n_changed": int(changed[c])}
        counts = [int(np.nansum(y[:, c] == 1)) for y in (labels, fixed)]
        rows.append(
            head
            | {"metric": "n_positive", "original": counts[0], "corrected": counts[1]}
            | {"change": counts[1] - counts[0]}
        )
        for metric in CORRECTED_METRICS:
            sides = (n[0][metric], n[1][metric])
            rows.append(head | _metric_rows(metric, c, paired[metric], sides))
    return pd.DataFrame(rows, columns=list(CORRECTED_COLUMNS))


ORDERS = ("highest probability first", "lowest probability first", "closest to the threshold first")


def visible(mode: str, saved: bool) -> tuple[bool, bool]:
    """(show the model's output, show the dataset label) for a reader in ``mode``, before/after saving."""
    if saved or mode == "unblinded":
        return True, True
    return mode == "blind_labels", False


def film_queue(
    cases: pd.DataFrame,
    mode: str,
    *,
    focus: str | None = None,
    outcomes: Sequence[str] | None = None,
    order: str = ORDERS[0],
    seed: int = 0,
) -> list[str]:
    """The films a reader walks through, in order.

    Unblinded: films whose ``focus`` finding has one of ``outcomes``, ordered by that finding's
    probability (or closeness to its threshold). Blinded modes must not leak the label or the
    model's output through the order, so every film comes, in a fixed shuffle of ``seed``.
    """
    if cases.empty:
        return []
    if mode != "unblinded":
        films = np.array(sorted(cases["image_id"].astype(str).unique()))
        return films[np.random.default_rng(seed).permutation(len(films))].tolist()
    part = cases[cases["class_name"] == focus] if focus is not None else cases
    if outcomes is not None:
        part = part[part["outcome"].isin(list(outcomes))]
    if order not in ORDERS:
        raise ReviewStoreError(f"order '{order}' is not one of: {', '.join(ORDERS)}")
    key = {
        ORDERS[0]: -part["prob"],
        ORDERS[1]: part["prob"],
        ORDERS[2]: (part["prob"] - part["threshold"]).abs(),
    }[order]
    part = part.iloc[np.argsort(key.to_numpy(), kind="stable")]
    return list(dict.fromkeys(part["image_id"].astype(str)))


def film_findings(cases: pd.DataFrame, image_id: str) -> pd.DataFrame:
    """The session's findings on one film (class_name, prob, threshold, label, model_positive, outcome)."""
    return cases[cases["image_id"].astype(str) == str(image_id)].reset_index(drop=True)


def reviewed_films(verdicts: Sequence[Verdict], reader: str, cases: pd.DataFrame) -> set[str]:
    """Films on which ``reader`` has a call for every session finding the film has a label for."""
    done = {(v.image_id, v.class_name) for v in verdicts if v.reviewer == reader}
    if cases.empty:
        return set()
    films = cases["image_id"].astype(str).to_numpy()
    called = np.fromiter(
        ((f, c) in done for f, c in zip(films, cases["class_name"])), dtype=bool, count=len(films)
    )
    missing = set(films[~called])
    return set(films[called]) - missing


@dataclass(frozen=True)
class Blinding:
    """Where one reader stands in a session: films in it, films they have still to call, when they revealed.

    In a blinded session the views over every film (agreement, adjudication, corrected metrics and
    the export, which show each film's dataset label, model output and every reader's calls) are
    closed to the reader until they have called every film (``left == 0``) or revealed the session
    (``revealed_at``, from :meth:`ReviewStore.revealed_at`); unblinded sessions are never closed.
    """

    mode: str
    films: int
    left: int
    revealed_at: str | None = None

    @property
    def closed(self) -> bool:
        return self.mode != "unblinded" and self.left > 0 and self.revealed_at is None


def reader_blinding(
    mode: str,
    cases: pd.DataFrame,
    verdicts: Sequence[Verdict],
    reader: str,
    revealed_at: str | None = None,
) -> Blinding:
    """``reader``'s :class:`Blinding` in a session of ``mode`` over ``cases`` (blinded queues hold every film);
    a reader with no name has read nothing."""
    films = set(cases["image_id"].astype(str))
    done = reviewed_films(verdicts, reader, cases) if reader else set()
    return Blinding(mode, len(films), len(films - done), revealed_at)


def next_unreviewed(queue: Sequence[str], reviewed: set[str], start: int) -> int | None:
    """Index of the first film after ``start`` (wrapping round) not yet reviewed; None when all are."""
    n = len(queue)
    for step in range(1, n + 1):
        index = (start + step) % n
        if queue[index] not in reviewed:
            return index
    return None


def resume_index(queue: Sequence[str], saved: tuple[int, str] | None) -> int:
    """Where a reader resumes: the film they were on if it is still in the queue, else their index (clamped)."""
    if not queue or saved is None:
        return 0
    position, image_id = saved
    if image_id in queue:
        return list(queue).index(image_id)
    return int(min(max(position, 0), len(queue) - 1))


@dataclass(frozen=True)
class SessionData:
    """A session with what is needed to analyse it (its run, the thresholds its readers saw)."""

    session: ReviewSession
    run: EvalRun
    thresholds: dict[str, float]
    threshold_set: str
    multilabel: bool
    classes: tuple[str, ...]

    def cases(self) -> pd.DataFrame:
        return film_cases(
            self.run,
            self.classes,
            self.thresholds,
            multilabel=self.multilabel,
            films=session_films(self.session),
        )


def load_session(store: ReviewStore, session_id: int) -> SessionData:
    """Open a session's checkpoint and evaluation run (for the CLI; the dashboard passes its cached run)."""
    session = store.session(session_id)
    try:
        entry = read_entry(session.checkpoint)
    except OSError as exc:
        raise CheckpointError(
            f"review session {session_id} was run on {session.checkpoint}, which cannot be read "
            f"({exc})"
        ) from None
    if not entry.ok:
        raise CheckpointError(
            f"review session {session_id} was run on {session.checkpoint}: {entry.error}"
        )
    run = load_eval_run(entry, session.eval_run)
    if run.predictions is None:
        raise CheckpointError(
            " ".join(run.warnings) or f"no predictions for the {session.eval_run} split"
        )
    active = entry.threshold_store().active()
    thresholds, name = session_thresholds(session, active.thresholds, active.name)
    multilabel = entry.card.label_space.get("task", "multilabel") == "multilabel"
    return SessionData(session, run, thresholds, name, multilabel, session_classes(session, run))


def session_frame(store: ReviewStore, data: SessionData) -> pd.DataFrame:
    """The session's verdict frame (:func:`verdict_frame`)."""
    sid = data.session.id
    return verdict_frame(
        store.verdicts(sid), store.export_rows(sid), data.cases(), data.threshold_set
    )


def require_open(store: ReviewStore, data: SessionData) -> None:
    """Refuse a session's whole-session views (agreement, export) to an identified user it is still
    closed to, as the Review page would (:class:`Blinding`); the command line's operator is not one
    of its readers and sees them."""
    actor = store.actor
    if not actor.identified:
        return
    sid = data.session.id
    blinding = reader_blinding(
        data.session.mode,
        data.cases(),
        store.verdicts(sid, reviewer=actor.name),
        actor.name,
        store.revealed_at(sid, actor.name),
    )
    if blinding.closed:
        raise AccessDeniedError(
            f"review session {sid} is blinded and {actor.name} has {blinding.left} of {blinding.films} "
            "film(s) still to call: its labels, model output and other readers' calls stay closed "
            "to them until they have called every film or revealed the session"
        )


def release_export(
    store: ReviewStore, rows: Sequence[Mapping], *, what: str, identifiable: bool = False
) -> list[dict]:
    """Export rows as they may leave the server: allowed by the acting user's role, film and patient
    identifiers pseudonymised unless ``identifiable`` (which needs the right to see them), audited."""
    store.actor.require(roles.EXPORT)
    if identifiable:
        store.actor.require(roles.VIEW_PATIENT_DATA)
    out = [dict(r) for r in rows] if identifiable else store.pseudonymiser().records(rows)
    store.audit.record(
        store.actor,
        audit_log.EXPORT,
        target=what,
        detail={"rows": len(out), "pseudonymised": not identifiable},
    )
    return out


def export_session(
    store: ReviewStore, session_id: int | None, path, *, identifiable: bool = False
) -> int:
    """Write one formula-safe CSV row per reader verdict (all sessions when ``session_id`` is None),
    films pseudonymised unless ``identifiable`` (see :func:`release_export`)."""
    store.actor.require(roles.EXPORT)
    ids = [session_id] if session_id is not None else sorted(s.id for s in store.sessions())
    frames = []
    for sid in ids:
        try:
            data = load_session(store, sid)
        except CheckpointError as exc:  # the run is gone: export what the database alone knows
            if session_id is not None:
                raise
            if store.actor.identified and store.session(sid).mode != "unblinded":
                logger.warning(
                    "session %s: %s; left out (its blinding cannot be checked)", sid, exc
                )
                continue
            logger.warning("session %s: %s; exported without probabilities and outcomes", sid, exc)
            frames.append(pd.DataFrame(store.export_rows(sid), columns=list(EXPORT_COLUMNS)))
            continue
        require_open(store, data)
        frames.append(session_frame(store, data))
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(SESSION_EXPORT_COLUMNS))
    )
    frame = frame.reindex(columns=list(SESSION_EXPORT_COLUMNS))
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    what = f"review session {session_id}" if session_id is not None else "every review session"
    rows = release_export(store, rows, what=what, identifiable=identifiable)
    write_records_csv(path, rows, SESSION_EXPORT_COLUMNS)
    return len(rows)


__all__ = [
    "CORRECTED_COLUMNS",
    "CORRECTED_METRICS",
    "EXPORT_EXTRA",
    "FILMS_FILTER",
    "KAPPA_UNDEFINED",
    "LABEL_RATER",
    "MODEL_RATER",
    "SESSION_EXPORT_COLUMNS",
    "Blinding",
    "SessionData",
    "kappa_text",
    "reader_blinding",
    "ORDERS",
    "agreement",
    "call_of",
    "film_findings",
    "film_queue",
    "next_unreviewed",
    "resume_index",
    "reviewed_films",
    "visible",
    "corrected_labels",
    "corrected_metrics",
    "disagreements",
    "export_session",
    "release_export",
    "require_open",
    "film_cases",
    "load_session",
    "majority_call",
    "ratings",
    "session_classes",
    "session_films",
    "session_frame",
    "session_thresholds",
    "verdict_for",
    "verdict_frame",
]
