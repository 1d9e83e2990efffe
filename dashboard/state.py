"""What every page shares: the checkpoint list, the chosen checkpoint, cached models and runs.

Expensive objects are cached across sessions with ``st.cache_resource`` (one Predictor per
checkpoint file and one lung model, both thread-safe; one parsed evaluation run per run folder). Cache keys
include the file's modification time so a retrained or re-evaluated checkpoint is reloaded.
Per-user choices (which checkpoint, extra folders, data root, the reader's name) live in
``st.session_state``; the reader's name is also kept in the page URL (``?reader=…``) so a reload
or a bookmark keeps it. A named reader's threshold-set choice is kept in the checkpoint's
threshold store (per reader name), an unnamed one's in the browser session.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from cxr_core.artifacts import catalog as model_catalog
from cxr_core.artifacts.catalog import CheckpointEntry, EvalRun
from cxr_core.artifacts.review_store import ReviewStore, default_review_dir
from cxr_core.artifacts.run_dir import RunDir
from cxr_core.artifacts.thresholds_store import ThresholdSet
from cxr_core.errors import CheckpointError
from cxr_core.inference import lungs as lung_models
from cxr_core.inference.lungs import LungSegmenter
from cxr_core.inference.predictor import Predictor
from dashboard.prefetch import Prefetcher

SELECTED = "cxr_selected_checkpoint"
EXTRA_DIRS = "cxr_extra_checkpoint_dirs"
DATA_ROOT = "cxr_data_root"
READER = "cxr_reader"
READER_PARAM = "reader"
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


def reader() -> str:
    """The reader's name for this browser session ('' until entered)."""
    return " ".join(str(st.session_state.get(READER, "")).split())


def restore_reader() -> None:
    """Before the reader widget is drawn: take the name from the URL on a fresh session."""
    if READER not in st.session_state:
        st.session_state[READER] = " ".join(str(st.query_params.get(READER_PARAM, "")).split())


def keep_reader_in_url() -> None:
    """After the widget: mirror the name into ``?reader=`` (page switches may drop query parameters)."""
    name = reader()
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
    """The review database in ``CXR_REVIEW_DIR`` (default ``~/.cxr``)."""
    return _review_store(str(default_review_dir()))


def data_roots() -> list[str]:
    """Folders where evaluated images are looked for (sidebar of Review, or ``CXR_DATA_ROOT``)."""
    raw = st.session_state.get(DATA_ROOT, os.environ.get("CXR_DATA_ROOT", ""))
    return [p.strip() for p in str(raw).split(os.pathsep) if p.strip()]
