"""The Worklist page's state and presentation: which films, their background job, the table.

Jobs are shared by the whole server (``st.cache_resource``): two readers opening the same folder
with the same model watch one job, and a reload finds the job (or, once the server restarts,
the on-disk cache) instead of scoring again. What each reader sees (the source they opened, the
filters, the threshold set) stays in their own session. The PACS is the one the server is
configured for (``CXR_PACS_URL`` / ``CXR_PACS_CONFIG``); a browser cannot point the server's
credentials at another address.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, checkpoint_digest
from cxr_core.errors import ConfigError
from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT
from cxr_core.inference.predictor import Predictor
from cxr_core.pacs.config import PacsConfig, load_pacs_config
from cxr_core.reporting.outcome import OUT_OF_DOMAIN, REFUSED, SCORED, UNREADABLE
from cxr_core.triage.cache import ScoreCache, default_cache_dir
from cxr_core.triage.items import WorklistItem, item_keys
from cxr_core.triage.job import WorklistJob, WorklistProgress
from cxr_core.triage.table import TriageRow, triage_frame
from dashboard.state import LungModel

OPENED = "cxr_worklist_opened"
FOLDER_PARAM = "folder"
MAX_JOBS = 8
MAX_UPLOADS = 500
CRITICAL_ROW = "background-color: #fde2e1"
NOT_TRIAGED_ROW = "color: #6b7785"


@dataclass(frozen=True)
class OpenedWorklist:
    """The films a reader opened: where from (for the caption) and the items."""

    label: str
    items: tuple[WorklistItem, ...]


class _Jobs:
    """The server's worklist jobs, newest last; the oldest finished ones are dropped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: OrderedDict[str, WorklistJob] = OrderedDict()

    def get(self, key: str, start) -> WorklistJob:
        with self.lock:
            if key in self.jobs:
                self.jobs.move_to_end(key)
                return self.jobs[key]
            self.jobs[key] = start()
            for old in [k for k, j in self.jobs.items() if j.snapshot().finished][:-MAX_JOBS]:
                del self.jobs[old]
            return self.jobs[key]


@st.cache_resource
def _jobs() -> _Jobs:
    return _Jobs()


@st.cache_data(max_entries=16, show_spinner=False)
def _digest(path: str, stamp: float) -> str:
    return checkpoint_digest(path)


def score_cache(entry: CheckpointEntry, lungs: LungModel) -> ScoreCache:
    """The on-disk scores of this checkpoint (and the lung model, when the gate uses it)."""
    model = _digest(str(entry.model_path), entry.model_path.stat().st_mtime)
    lung = (
        _digest(str(DEFAULT_LUNG_CHECKPOINT), DEFAULT_LUNG_CHECKPOINT.stat().st_mtime)
        if lungs.segmenter is not None
        else ""
    )
    return ScoreCache(default_cache_dir(), model, lung)


def job_for(
    predictor: Predictor, entry: CheckpointEntry, lungs: LungModel, items: Sequence[WorklistItem]
) -> WorklistJob:
    """The (shared) background job scoring ``items`` with this checkpoint; started if new."""
    cache = score_cache(entry, lungs)
    identity = "|".join((str(entry.model_path), lungs.key, *item_keys(items)))
    key = hashlib.sha256(identity.encode()).hexdigest()
    return _jobs().get(key, lambda: WorklistJob(predictor, items, cache).start())


def open_items(label: str, items: Sequence[WorklistItem]) -> None:
    st.session_state[OPENED] = OpenedWorklist(label, tuple(items))


def opened() -> OpenedWorklist | None:
    value = st.session_state.get(OPENED)
    return value if isinstance(value, OpenedWorklist) else None


def pacs_config() -> tuple[PacsConfig | None, str]:
    """The server's PACS settings, or why there are none (shown on the page)."""
    try:
        return load_pacs_config(), ""
    except ConfigError as exc:
        return None, str(exc)


def progress_text(progress: WorklistProgress) -> str:
    cached = sum(e.cached for e in progress.entries)
    text = f"Scored {progress.done} of {progress.total} films"
    text += f" ({cached} from the cache)" if cached else ""
    if progress.finished:
        return text + f" in {progress.elapsed_s:.1f} s."
    return text + f"; the rest are being scored ({progress.elapsed_s:.0f} s so far)."


SHORT_OUTCOMES = {
    SCORED: "scored",
    OUT_OF_DOMAIN: "out of domain",
    REFUSED: "refused",
    UNREADABLE: "unreadable",
}


def outcome_label(outcome: str) -> str:
    """The outcome in one or two words (filters, table cells); the reason says the rest."""
    return SHORT_OUTCOMES[outcome]


def display_frame(rows: Sequence[TriageRow], *, show_patient: bool = True) -> pd.DataFrame:
    """The table as shown: critical findings marked, outcomes in words, dates readable; the patient
    column only for a user whose role may see patient identifiers."""
    frame = triage_frame(rows).reset_index(drop=True)
    if not show_patient:
        frame = frame.drop(columns="patient")
    frame["critical"] = frame["critical"].map(lambda c: f"⚠ {c}" if c else "")
    frame["outcome"] = frame["outcome"].map(outcome_label)
    frame["date"] = frame["date"].map(_date)
    return frame


def _date(value: str) -> str:
    value = str(value or "")
    return (
        f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else value
    )


def row_styles(rows: Sequence[TriageRow]):
    """Per-row CSS for a Styler: critical films tinted, films the model could not triage greyed."""

    def style(row: pd.Series) -> list[str]:
        source = rows[row.name]
        css = (
            CRITICAL_ROW
            if source.critical
            else ("" if source.outcome.outcome == SCORED else NOT_TRIAGED_ROW)
        )
        return [css] * len(row)

    return style
