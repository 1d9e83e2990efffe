"""What every page shares: the checkpoint list, the chosen checkpoint, cached models and runs.

Expensive objects are cached across sessions with ``st.cache_resource`` (one Predictor per
checkpoint file and one lung model, both thread-safe; one parsed evaluation run per run folder). Cache keys
include the file's modification time so a retrained or re-evaluated checkpoint is reloaded.
Per-user choices (which checkpoint, extra folders, data root, the reader's name) live in
``st.session_state``; the reader's name is also kept in the page URL (``?reader=…``) so a reload
or a bookmark keeps it. A named reader's threshold-set choice is kept in the checkpoint's
threshold store (per reader name), an unnamed one's in the browser session.

Who the user is comes from one place, :func:`actor`: with sign-in on (``dashboard.auth``), the
signed-in user, whose name is the reader name (no text box, the URL's ``?reader=`` ignored);
without it, the single user of a local install, named by the text box. The review database and
threshold stores handed to pages act for that user (:func:`review_store`,
:func:`threshold_store`), so their roles are checked by the stores themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cxr_core.access import roles
from cxr_core.access.config import AuthConfig, auth_config_path, load_auth_config
from cxr_core.access.roles import Actor, local_user
from cxr_core.artifacts import catalog as model_catalog
from cxr_core.artifacts.audit_log import EXPORT, FILM_VIEWED, AuditLog
from cxr_core.artifacts.catalog import CheckpointEntry, EvalRun
from cxr_core.artifacts.prediction_table import (
    PredictionRow,
    prediction_table_text,
    pseudonymised_rows,
)
from cxr_core.artifacts.review_store import ReviewStore, default_review_db
from cxr_core.artifacts.run_dir import RunDir
from cxr_core.artifacts.thresholds_store import ThresholdSet, ThresholdStore
from cxr_core.artifacts.user_store import UserStore
from cxr_core.errors import AccessDeniedError, CheckpointError
from cxr_core.inference import lungs as lung_models
from cxr_core.inference.lungs import LungSegmenter
from cxr_core.inference.predictor import Predictor
from dashboard.prefetch import Prefetcher

SELECTED = "cxr_selected_checkpoint"
EXTRA_DIRS = "cxr_extra_checkpoint_dirs"
DATA_ROOT = "cxr_data_root"
READER = "cxr_reader"
READER_PARAM = "reader"
ACTOR = "cxr_actor"  # the signed-in Actor (absent without sign-in)
VIEWED = "cxr_films_viewed"  # (page, film) already audited as viewed in this browser session
VIEW_SET = "cxr_view_set"  # {checkpoint key: threshold-set name viewed in this browser session}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(ttl=30, show_spinner=False)
def _discover(roots: tuple[str, ...]) -> list[CheckpointEntry]:
    return model_catalog.discover_checkpoints(roots)


def checkpoint_roots() -> list[str]:
    """Default folders (``CXR_CHECKPOINT_DIRS`` or the bundled ``checkpoints/``) plus the user's own."""
    roots = [str(p) for p in model_catalog.default_checkpoint_dirs()]
    return roots + [d for d in st.session_state.get(EXTRA_DIRS, []) if d not in roots]


def entries() -> list[CheckpointEntry]:
    return _discover(tuple(checkpoint_roots()))


def rescan() -> None:
    _discover.clear()


def selected_entry() -> CheckpointEntry | None:
    """The checkpoint chosen in the sidebar; before any choice, the first readable one.

    The fallback matters when a page runs without the router (a page URL opened on a freshly
    started server, or a page tested on its own). None only when there is no checkpoint at all.
    """
    found = entries()
    key = st.session_state.get(SELECTED)
    for entry in found:
        if entry.key == key:
            return entry
    usable = [e for e in found if e.ok]
    return usable[0] if usable else (found[0] if found else None)


@dataclass(frozen=True)
class LungModel:
    """The lung model every session shares, or why there is none (the Predict page says so)."""

    segmenter: LungSegmenter | None
    key: str = (
        ""  # file and modification time: part of the cache key of everything computed with it
    )
    missing: str = ""  # why there is no lung model ("" when there is one)


@st.cache_resource(max_entries=2, show_spinner="Loading the lung model…")
def _lung_segmenter(model_path: str, stamp: float) -> LungSegmenter:
    return LungSegmenter.from_path(model_path, device="auto")


def lung_model() -> LungModel:
    """The bundled lung model (``checkpoints/lungs``), loaded once per file version for every session.

    The dashboard works without it: a fresh clone without the file, or a damaged file, gives
    no lung features and says why, rather than no predictions at all.
    """
    path = lung_models.DEFAULT_LUNG_CHECKPOINT
    if not path.is_file():
        return LungModel(None, missing=f"there is no lung model at {path}")
    stamp = _mtime(path)
    try:
        return LungModel(_lung_segmenter(str(path), stamp), key=f"{path}:{stamp}")
    except CheckpointError as exc:
        return LungModel(None, missing=f"the lung model could not be loaded ({exc})")


@st.cache_resource(max_entries=4, show_spinner="Loading and warming up the model…")
def _predictor(
    model_path: str, stamp: float, lung_key: str, _lungs: LungSegmenter | None
) -> Predictor:
    return Predictor.from_checkpoint(model_path, lungs=_lungs)


def predictor(entry: CheckpointEntry) -> Predictor:
    """The shared, warmed-up Predictor of a checkpoint (loaded once per file version), whose input
    gate checks the lungs when the lung model is there."""
    lungs = lung_model()
    return _predictor(str(entry.model_path), _mtime(entry.model_path), lungs.key, lungs.segmenter)


@st.cache_resource(max_entries=8, show_spinner="Reading the evaluation run…")
def _eval_run(directory: str, split: str, stamp: tuple[float, float]) -> EvalRun:
    return model_catalog.load_eval_run(model_catalog.read_entry(directory), split)


def eval_run(entry: CheckpointEntry, split: str) -> EvalRun:
    """Predictions + report of a split (shared read-only across sessions; do not mutate)."""
    run_dir = RunDir(entry.dir)
    stamp = (_mtime(run_dir.predictions(split)), _mtime(run_dir.report(split)))
    return _eval_run(str(entry.dir), split, stamp)


def chosen_set(entry: CheckpointEntry) -> str | None:
    """The set this reader chose to read with (None: the model's default).

    A named reader's choice is kept in the checkpoint's threshold store, so it survives reloads
    and other browsers; without a name it lives in this browser session only.
    """
    name = reader()
    if name:
        choice = entry.threshold_store().reader_choice(name)
        return (choice.set_name or None) if choice is not None else None
    return st.session_state.get(VIEW_SET, {}).get(entry.key)


def active_thresholds(entry: CheckpointEntry) -> ThresholdSet:
    """The set in force for this reader: the one they chose, else the model's default.

    Read from disk each run so a save or a new default elsewhere shows at once.
    """
    store = entry.threshold_store()
    name = chosen_set(entry)
    if name and name in store.names():
        return store.load(name)
    return store.active()


def viewing_own_set(entry: CheckpointEntry) -> bool:
    """True when this reader reads with a set other than the model's default."""
    name = chosen_set(entry)
    store = entry.threshold_store()
    return bool(name) and name in store.names() and name != store.active_name()


def view_set(entry: CheckpointEntry, name: str | None) -> None:
    """Choose the set this reader reads with (None: follow the model's default); kept under the
    reader's name when there is one, else for this browser session."""
    views = dict(st.session_state.get(VIEW_SET, {}))
    if name:
        views[entry.key] = name
    else:
        views.pop(entry.key, None)
    st.session_state[VIEW_SET] = views
    if reader():
        entry.threshold_store().choose(reader(), name)


def unseen_default_changes(entry: CheckpointEntry) -> list[dict]:
    """Changes of the model's default this named reader has not acknowledged (oldest first).

    A reader seen for the first time starts from the current default (nothing to report);
    without a name there is nobody to remember it for.
    """
    name = reader()
    if not name:
        return []
    store = entry.threshold_store()
    if store.reader_choice(name) is None:
        store.acknowledge(name)
        return []
    return store.unseen_changes(name)


def acknowledge_default_changes(entry: CheckpointEntry) -> None:
    """The reader has read the notice of the default's changes: stop showing it."""
    if reader():
        entry.threshold_store().acknowledge(reader())


@st.cache_data(ttl=5, show_spinner=False)
def _auth_config(path: str, stamp: float) -> AuthConfig:
    return load_auth_config(path if stamp else None)


def auth_config() -> AuthConfig:
    """The install's sign-in settings, re-read when their file changes (within 5 s)."""
    path = auth_config_path()
    return _auth_config(str(path), _mtime(path))


def actor() -> Actor:
    """Who this browser session acts as: the signed-in user, or a local install's single user.

    With sign-in on and nobody signed in, nothing may be done: the router shows the sign-in page
    before any page runs, so reaching here means a page ran without it.
    """
    signed = st.session_state.get(ACTOR)
    if isinstance(signed, Actor):
        return signed
    if auth_config().signs_in:
        raise AccessDeniedError("nobody is signed in: sign in first")
    return local_user(typed_reader())


def may(action: str) -> bool:
    """Whether this browser session's user may do ``action`` (to hide what their role cannot use)."""
    try:
        return actor().may(action)
    except AccessDeniedError:
        return False


def typed_reader() -> str:
    """The name typed in the sidebar's Reader box ('' until entered); used only without sign-in."""
    return " ".join(str(st.session_state.get(READER, "")).split())


def reader() -> str:
    """The reader's name for this browser session: the signed-in user's, else the one typed ('' until entered)."""
    signed = st.session_state.get(ACTOR)
    return signed.name if isinstance(signed, Actor) else typed_reader()


def restore_reader() -> None:
    """Before the reader widget is drawn: take the name from the URL on a fresh session."""
    if READER not in st.session_state:
        st.session_state[READER] = " ".join(str(st.query_params.get(READER_PARAM, "")).split())


def keep_reader_in_url() -> None:
    """After the widget: mirror the name into ``?reader=`` (page switches may drop query parameters)."""
    name = typed_reader()
    if name and st.query_params.get(READER_PARAM) != name:
        st.query_params[READER_PARAM] = name
    elif not name and READER_PARAM in st.query_params:
        del st.query_params[READER_PARAM]


@st.cache_resource
def prefetcher() -> Prefetcher:
    """The server's one background worker for the next review film's image and heatmap."""
    return Prefetcher()


@st.cache_resource
def _review_store(folder: str) -> ReviewStore:
    return ReviewStore(folder)


def review_store() -> ReviewStore:
    """The review database, acting for this session's user: ``CXR_REVIEW_DB`` (a PostgreSQL URL
    or a file) when set, else ``review.sqlite3`` in ``CXR_REVIEW_DIR`` (default ``~/.cxr``)."""
    return _review_store(default_review_db()).acting(actor())


def users() -> UserStore:
    """The install's users, for signing in (changing them checks the acting user's role)."""
    return _review_store(default_review_db()).users


def audit_log() -> AuditLog:
    """The install's audit log (reading it whole is for admins: :meth:`AuditLog.read`)."""
    return _review_store(default_review_db()).audit


def threshold_store(entry: CheckpointEntry) -> ThresholdStore:
    """A checkpoint's threshold sets, acting for this session's user (changes checked and audited)."""
    return entry.threshold_store().acting(actor(), audit_log())


def released_table(
    classes: Sequence[str], rows: Sequence[PredictionRow], *, identifiable: bool, what: str
) -> str:
    """A prediction table as it may leave the server (a download): film identifiers pseudonymised
    unless ``identifiable`` (which needs the right to see patient identifiers); audited."""
    if identifiable:
        actor().require(roles.VIEW_PATIENT_DATA)
    else:
        rows = pseudonymised_rows(rows, review_store().pseudonymiser())
    audit_log().record(
        actor(), EXPORT, target=what, detail={"rows": len(rows), "pseudonymised": not identifiable}
    )
    return prediction_table_text(classes, rows)


def film_viewed(film: str, page: str, **detail: object) -> None:
    """Audit that this session's user opened ``film`` on ``page`` (once per film and page per session)."""
    seen = st.session_state.setdefault(VIEWED, set())
    if (page, film) in seen:
        return
    audit_log().record(actor(), FILM_VIEWED, film=film, detail={"page": page, **detail})
    seen.add((page, film))


def data_roots() -> list[str]:
    """Folders where evaluated images are looked for (sidebar of Review, or ``CXR_DATA_ROOT``)."""
    raw = st.session_state.get(DATA_ROOT, os.environ.get("CXR_DATA_ROOT", ""))
    return [p.strip() for p in str(raw).split(os.pathsep) if p.strip()]
