"""Worklist: many films scored in the background, the most abnormal first, critical findings flagged."""

from __future__ import annotations

import streamlit as st

from cxr_core.access import roles
from cxr_core.inference.predictor import Predictor
from cxr_core.pacs.client import PacsClient
from cxr_core.pacs.worklist import pacs_items
from cxr_core.reporting.outcome import OUTCOMES
from cxr_core.triage.items import folder_items, upload_items
from cxr_core.triage.job import WorklistJob
from cxr_core.triage.table import CRITICAL_FINDINGS, filter_rows, triage_rows
from dashboard import state, worklist
from dashboard.tables import table_height
from dashboard.widgets import cxr_errors, require_entry
from dashboard.worklist_handover import open_in_reading_view

LIVE_SECONDS = 1.0  # how often the table redraws while films are being scored
SHOWN = "wl_shown_keys"  # the films in the order the reader last saw them
PICKED = "wl_picked_key"  # the film the reader selected


def _open_folder() -> None:
    folder = st.session_state["wl_folder"].strip()
    with cxr_errors():
        worklist.open_items(f"folder {folder}", folder_items(folder))
        st.query_params[worklist.FOLDER_PARAM] = folder


def _source_controls() -> None:
    source = st.segmented_control(
        "Films from", ["Folder", "Upload", "PACS"], default="Folder", key="wl_source"
    )
    if source == "Folder":
        if "wl_folder" not in st.session_state:
            st.session_state["wl_folder"] = st.query_params.get(worklist.FOLDER_PARAM, "")
        left, right = st.columns([4, 1], vertical_alignment="bottom")
        left.text_input("Folder on the server", key="wl_folder", placeholder="/data/exports/today")
        right.button("Open", key="wl_open_folder", on_click=_open_folder, type="primary")
    elif source == "Upload":
        files = st.file_uploader(
            f"Films (PNG, JPEG, DICOM; up to {worklist.MAX_UPLOADS})",
            accept_multiple_files=True,
            key="wl_uploads",
        )
        if files and st.button("Score these films", key="wl_open_upload", type="primary"):
            batch = [(f.name, f.getvalue) for f in files[: worklist.MAX_UPLOADS]]
            worklist.open_items(f"{len(batch)} uploaded films", upload_items(batch))
    else:
        _pacs_controls()


def _pacs_controls() -> None:
    config, why = worklist.pacs_config()
    if config is None:
        st.info(
            f"No PACS is configured for this server ({why}). Set CXR_PACS_URL (and CXR_PACS_USER / "
            "CXR_PACS_PASSWORD) or CXR_PACS_CONFIG before starting the dashboard; see the README, "
            "'Connect to a PACS'."
        )
        return
    st.caption(
        f"PACS: {config.display_url}" + (f" as {config.username}" if config.username else "")
    )
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
    date = c1.text_input("Study date", key="wl_date", placeholder="YYYYMMDD or YYYYMMDD-YYYYMMDD")
    patient = c2.text_input("Patient ID", key="wl_patient")
    limit = c3.number_input("At most", 1, 500, 50, key="wl_limit")
    if c4.button("Query", key="wl_query", type="primary"):
        with cxr_errors(), st.spinner("Querying the PACS…"):
            client = PacsClient(config)
            found = pacs_items(
                client, date=date or None, patient_id=patient or None, limit=int(limit)
            )
            worklist.open_items(f"{len(found)} PACS films", found)


def _filters(classes: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Critical findings, findings a film must call, gate outcomes shown (this reader's choice)."""
    f1, f2, f3 = st.columns([1, 1, 1.4])
    critical = f1.multiselect(
        "Critical findings",
        classes,
        default=[c for c in CRITICAL_FINDINGS if c in classes],
        key="wl_critical",
        help="Flagged when the probability reaches the model card's threshold, on films the input gate let through.",
    )
    findings = f2.multiselect("Only films calling", classes, key="wl_findings")
    outcomes = f3.multiselect(
        "Gate outcome",
        list(OUTCOMES),
        default=list(OUTCOMES),
        key="wl_outcomes",
        format_func=worklist.outcome_label,
    )
    return critical, findings, outcomes


def _remember_pick() -> None:
    """The film the reader selected, by key: rows move while films are still being scored, so
    the row index is read against the rows the reader saw when clicking."""
    rows = st.session_state["wl_table"].selection.rows
    shown = st.session_state.get(SHOWN, [])
    st.session_state[PICKED] = shown[rows[0]] if rows and rows[0] < len(shown) else None


def _open_selected(job: WorklistJob, row) -> None:
    item = next(i for i in job.items if i.key == row.key)
    if st.button(f"Open {row.name} in the reading view", type="primary", key="wl_read"):
        with cxr_errors():
            open_in_reading_view(item.name, item.read())


def _worklist_view(job: WorklistJob, predictor: Predictor, live: bool) -> None:
    """Runs as a fragment: progress, filters and table redraw without the rest of the page."""
    entry = state.selected_entry()
    progress = job.snapshot()
    if live and progress.finished:
        st.rerun()  # everything scored: redraw once more without the timer
    st.progress(progress.done / max(progress.total, 1), text=worklist.progress_text(progress))
    critical, findings, outcomes = _filters(list(predictor.classes))
    thresholds = state.active_thresholds(entry).thresholds
    rows = triage_rows(progress.entries, predictor, thresholds, predictor.card.thresholds, critical)
    shown = filter_rows(rows, findings=findings, outcomes=outcomes)
    frame = worklist.display_frame(shown, show_patient=state.may(roles.VIEW_PATIENT_DATA))
    # While scoring, a plain table (redrawn every second); tinted rows once every film is scored.
    st.dataframe(
        frame if live else frame.style.apply(worklist.row_styles(shown), axis=1),
        hide_index=True,
        key="wl_table",
        on_select=_remember_pick,
        selection_mode="single-row",
        height=min(table_height(len(frame)), 640),
        column_config={
            "rank": st.column_config.NumberColumn("#", width=40),
            "critical": st.column_config.TextColumn(width=125),
            "abnormality": st.column_config.ProgressColumn(
                "abnormality", min_value=0.0, max_value=1.0, format="%.2f", width=105
            ),
            "top finding": st.column_config.TextColumn(width=125),
            "film": st.column_config.TextColumn(width=150),
            "patient": st.column_config.TextColumn(width=75),
            "date": st.column_config.TextColumn(width=90),
            "called": st.column_config.TextColumn(width=220),
            "outcome": st.column_config.TextColumn(width=100),
            "note": st.column_config.TextColumn(width=320),
        },
    )
    st.session_state[SHOWN] = [r.key for r in shown]
    st.caption(
        f"{len(shown)} of {len(rows)} films shown · most abnormal first, critical findings on top; films "
        "the input gate kept from being called come last. Select a row to open it in the reading view."
    )
    picked = next((r for r in shown if r.key == st.session_state.get(PICKED)), None)
    if picked is not None:
        _open_selected(job, picked)


live_view = st.fragment(_worklist_view, run_every=LIVE_SECONDS)
still_view = st.fragment(_worklist_view)

st.title("Worklist")
entry = require_entry()
if entry.external:
    st.info(
        f"**{entry.name}** holds another tool's predictions; there are no weights to score films with."
    )
    st.stop()
predictor = state.predictor(entry)
lungs = state.lung_model()
st.caption(
    f"Model **{entry.name}** · thresholds **{state.active_thresholds(entry).name}** · films are scored once "
    "and cached on the server, so reopening a worklist shows its scores at once."
)
if st.query_params.get(worklist.FOLDER_PARAM) and worklist.opened() is None:
    st.session_state["wl_folder"] = st.query_params[worklist.FOLDER_PARAM]
    _open_folder()  # a reload (or a bookmark) reopens the folder: its scores come from the cache
opened = worklist.opened()
with st.expander(f"Films: {opened.label}" if opened else "Open films", expanded=opened is None):
    _source_controls()
opened = worklist.opened()
if opened is None:
    st.info("Open a folder, upload films or query the PACS to build a worklist.")
    st.stop()
job = worklist.job_for(predictor, entry, lungs, opened.items)
if job.snapshot().finished:
    still_view(job, predictor, False)
else:
    live_view(job, predictor, True)
