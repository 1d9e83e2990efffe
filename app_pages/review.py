"""Review: a team of named readers reads films one at a time and calls each finding; agreement between
readers, adjudication of disagreements, and metrics with the corrected labels.

The Read view is laid out for one screen (1024 x 768 and up): the film on the left, sized to the
window, and the call grid (:mod:`dashboard.call_grid`) on the right with the film's actions and the
reading keys. What the grid and the film's clicks do lives in :mod:`dashboard.review_read`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from cxr_core.access import roles
from cxr_core.artifacts.catalog import OUTCOMES, resolve_image_path
from cxr_core.artifacts.review_store import MODES, ReviewSession, ReviewStore
from cxr_core.artifacts.run_dir import PREDICTIONS_FILE
from cxr_core.errors import CXRError
from cxr_core.evaluation.reading import draft_films
from cxr_core.evaluation.review import (
    ORDERS,
    SESSION_EXPORT_COLUMNS,
    agreement,
    corrected_labels,
    corrected_metrics,
    disagreements,
    film_cases,
    film_findings,
    film_queue,
    reader_blinding,
    reviewed_films,
    session_classes,
    session_films,
    session_thresholds,
    verdict_frame,
    visible,
)
from cxr_core.inference.explain import METHODS
from cxr_core.metrics import MIN_POSITIVES
from cxr_core.metrics.agreement import MIN_FILMS
from cxr_core.utils.csv_safe import records_csv_text
from dashboard import (
    call_grid,
    charts,
    marks,
    review_media,
    review_read,
    state,
    tables,
    viewer,
    views,
)
from dashboard.widgets import cxr_errors, fmt, require_entry, split_picker

SESSION = "rev_session_pick"
NEW = 0
VIEWS = ("Read", "Agreement", "Adjudicate", "Corrected metrics")
MESSAGE = "rev_message"
METHOD_PREF, HEAT_CLASS = "rev_method_pref", "rev_heat_class_pref"
MARK_BY = {"point": "Point", "box": "Box"}
PAGE_CSS = Path(__file__).resolve().parents[1] / "dashboard" / "assets" / "review_page.css"
# Width of the film column at the design viewport (viewer.CONTENT_WIDTH: 3 of 5 parts, less the gap), measured
# in Chromium; the adjudication film is this tall for a square film, so no empty band shows under it.
FILM_WIDTH = 555


def _pick_film(store: ReviewStore, session_id: int, reader: str, queue: list[str]) -> None:
    review_read.go(store, session_id, reader, queue, int(st.session_state["rev_film_pick"]))


def _film_height(shape: tuple[int, ...]) -> int:
    """Figure height that shows the whole film at the column's width (tall films capped to fit a laptop)."""
    return int(min(viewer.MAX_VIEW_HEIGHT, FILM_WIDTH * shape[0] / shape[1]))


def _data_root_input() -> list[str]:
    """The data-root box (predictions may store another machine's paths); returns the folders searched."""
    st.session_state.setdefault(state.DATA_ROOT, os.pathsep.join(state.data_roots()))
    st.text_input(
        f"Data root (folder(s) holding the evaluated images; separate several with '{os.pathsep}')",
        value=st.session_state[state.DATA_ROOT],
        key="rev_data_root",
        on_change=lambda: st.session_state.update(
            {state.DATA_ROOT: st.session_state["rev_data_root"]}
        ),
        help="predictions.csv may store paths from another machine; images are looked for under these "
        "folders by their relative path and image id. Default: $CXR_DATA_ROOT.",
    )
    return state.data_roots()


def _film_path(record: pd.Series, image_id: str, roots: list[str]) -> Path | None:
    """The film's file, or None after saying how to make it reachable."""
    path = resolve_image_path(str(record.get("path", "") or ""), image_id, roots)
    if path is None:
        st.warning(
            f"Image `{image_id}` is not reachable (recorded path: `{record.get('path', '') or 'none'}`). "
            "Set **Data root** (under **Session** above) to the folder that holds the dataset's images "
            "(e.g. the `nih14` folder for NIH ChestX-ray14), or start the dashboard with CXR_DATA_ROOT set."
        )
    return path


def _switch_to(session: ReviewSession, film: str | None) -> None:
    """Open a linked session that was read on another checkpoint: choose that checkpoint (this browser only)."""
    st.session_state[state.SELECTED] = session.checkpoint
    st.session_state["rev_split"] = session.eval_run
    review_read.open_link(session.id, film, SESSION)


def _follow_link(store: ReviewStore, checkpoint_id: str, splits: list[str]) -> None:
    """Open the session and film the address names (``?session=3&film=…``) while the picker has no
    choice: on a fresh tab, a reload, or after Streamlit dropped the picker's state."""
    session_id, film = review_read.link_request(SESSION)
    if session_id is None:
        return
    try:
        linked = store.session(session_id)
    except CXRError:
        st.warning(f"The link names review session {session_id}, which is not in {store.path}.")
        return
    if linked.checkpoint == checkpoint_id and linked.eval_run in splits:
        st.session_state["rev_split"] = linked.eval_run
        review_read.open_link(linked.id, film, SESSION)
        return
    st.info(f"The link opens review session “{linked.name}”, read on `{linked.checkpoint}`.")
    st.button(
        "Open it (switches the checkpoint in this browser)",
        key="rev_link_switch",
        on_click=_switch_to,
        args=(linked, film),
    )


def _picked() -> None:
    """The reader chose in the session picker: leaving for "New session…" takes the link out of the address."""
    if st.session_state[SESSION] == NEW:
        review_read.forget_link()


def _start(
    store: ReviewStore, checkpoint: str, split: str, thresholds: dict, set_name: str
) -> None:
    name = st.session_state.get("rev_new_name", "").strip()
    classes = list(st.session_state.get("rev_new_classes") or [])
    if not classes:
        st.session_state[MESSAGE] = "Choose at least one finding for the readers to call."
        return
    try:
        session = store.create_session(
            name,
            checkpoint,
            split,
            {"thresholds": thresholds, "threshold_set": set_name},
            mode=st.session_state["rev_new_mode"],
            classes=classes,
        )
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)
        return
    st.session_state[SESSION] = session.id


def _adjudicate(
    store: ReviewStore, session_id: int, reader: str, image_id: str, class_name: str
) -> None:
    if not reader:
        st.session_state[MESSAGE] = (
            "Enter your name as Reader in the sidebar: the adjudicator is recorded."
        )
        return
    label = st.session_state.get("rev_adj_label")
    if label is None:
        st.session_state[MESSAGE] = "Choose the final label (present or absent)."
        return
    try:
        store.adjudicate(
            session_id,
            image_id,
            class_name,
            1 if label == "present" else 0,
            reader,
            st.session_state.get("rev_adj_note", ""),
        )
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)


def _reveal(store: ReviewStore, session_id: int, reader: str) -> None:
    try:
        store.reveal(session_id, reader)
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)


@st.cache_data(max_entries=32, show_spinner=False)
def _film_cases(
    run_key: str,
    classes: tuple[str, ...],
    thresholds: tuple,
    multilabel: bool,
    _run,
    films: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    return film_cases(_run, classes, dict(thresholds), multilabel=multilabel, films=films)


@st.cache_data(max_entries=16, show_spinner="Computing agreement and bootstrap intervals…")
def _agreement(stamp: tuple, _frame: pd.DataFrame) -> pd.DataFrame:
    return agreement(_frame, n_boot=500, seed=0)


@st.cache_data(max_entries=16, show_spinner="Computing corrected metrics and bootstrap intervals…")
def _corrected_metrics(
    stamp: tuple, _run, thresholds: dict, _corrected: pd.DataFrame, classes: tuple[str, ...]
) -> pd.DataFrame:
    return corrected_metrics(_run, thresholds, _corrected, classes)


st.html(PAGE_CSS)
title_row = st.columns([1.3, 3.2], vertical_alignment="center")
title_row[0].title("Review")
entry = require_entry(need_eval=True)
store = state.review_store()
_follow_link(store, str(entry.dir), list(entry.eval_splits))
picks = st.columns([2.1, 1.7, 1], vertical_alignment="bottom")
with picks[2].popover("Session", icon=":material/tune:", width="stretch"):
    split = split_picker(entry, key="rev_split")
    session_details = st.container()
    filters = st.container()
    _data_root_input()
run = state.eval_run(entry, split)
if run.predictions is None:
    st.warning(" ".join(run.warnings) or f"No predictions for the {split} split.")
    st.stop()
multilabel = entry.card.get_label_space().multilabel
in_force = state.active_thresholds(entry)
checkpoint_id = str(entry.dir)
reader = state.reader()

sessions = [s for s in store.sessions(checkpoint_id) if s.eval_run == split]
labels = {NEW: "New session…"} | {
    s.id: views.session_label(s.id, s.name, s.mode, s.created) for s in sessions
}
if st.session_state.get(SESSION) not in labels:
    st.session_state[SESSION] = NEW
picks[0].selectbox(
    "Review session",
    list(labels),
    format_func=labels.__getitem__,
    key=SESSION,
    on_change=_picked,
    label_visibility="collapsed",
)
session_id = st.session_state[SESSION]
if session_id == NEW:
    with st.container(border=True):
        c1, c2 = st.columns(2)
        c1.text_input(
            "Session name",
            key="rev_new_name",
            placeholder="team + date, e.g. chest team 2024-05-01",
        )
        c2.selectbox("Reading mode", MODES, format_func=views.MODE_LABELS.get, key="rev_new_mode")
        # Every finding by default, as the widget's own default: a value set through session state
        # reaches the browser only in the run that sets it, and a box the browser rebuilds later
        # would come back empty ("Choose at least one finding").
        st.multiselect(
            "Findings every reader calls on each film",
            run.classes,
            default=list(run.classes),
            key="rev_new_classes",
        )
        st.caption(
            f"The session keeps the thresholds in force now (“{in_force.name}”), so outcomes stay those "
            "its readers saw."
        )
        st.button(
            "Start",
            key="rev_start",
            type="primary",
            on_click=_start,
            args=(store, checkpoint_id, split, dict(in_force.thresholds), in_force.name),
        )
message = st.session_state.pop(MESSAGE, None)
if message:
    st.error(message)
if session_id == NEW:
    st.info("Start a session, or pick one to join it as a reader.")
    st.stop()
session = store.session(session_id)
thresholds, set_name = session_thresholds(session, in_force.thresholds, in_force.name)
classes = session_classes(session, run)
run_key = f"{run.dir}:{len(run.predictions)}:{(run.dir / PREDICTIONS_FILE).stat().st_mtime}"
cases = _film_cases(
    run_key,
    tuple(classes),
    tuple(sorted(thresholds.items())),
    multilabel,
    run,
    session_films(session),
)
session_details.caption(
    f"**{views.MODE_LABELS[session.mode]}** · findings: {', '.join(classes)} · thresholds "
    f"“{set_name}” · readers so far: {', '.join(store.readers(session.id)) or 'none'} · "
    f"database: {store.path}"
    + (
        f" · {len(session_films(session))} films sent from the Performance page "
        f"({session.filters.get('from', '')})"
        if session_films(session)
        else ""
    )
)
if not reader:
    st.warning(
        "Enter your name as **Reader** in the sidebar (once per browser; a reload keeps it). "
        "Verdicts cannot be saved without it.",
        icon=":material/badge:",
    )

view = title_row[1].radio(
    "View", VIEWS, horizontal=True, key="rev_view", label_visibility="collapsed"
)
if view != "Read":
    review_read.keep_in_url(session.id)
mine_all = store.verdicts(session.id, reviewer=reader) if reader else []
blinding = reader_blinding(
    session.mode, cases, mine_all, reader, store.revealed_at(session.id, reader) if reader else None
)
if view != "Read":
    if (
        blinding.closed
    ):  # every film's label, model output and calls: not before this reader has read them all
        st.info(views.closed_text(blinding, reader), icon=":material/lock:")
        st.button(
            views.REVEAL,
            key="rev_reveal",
            on_click=_reveal,
            args=(store, session.id, reader),
            disabled=not reader,
        )
        st.stop()
    if views.open_text(blinding):
        st.caption(views.open_text(blinding))
    frame = verdict_frame(
        store.verdicts(session.id), store.export_rows(session.id), cases, set_name
    )

if view == "Agreement":
    st.download_button(
        "Export verdicts (CSV)",
        records_csv_text(
            frame.astype(object).where(frame.notna(), None).to_dict("records"),
            SESSION_EXPORT_COLUMNS,
        ),
        file_name=f"review_session_{session.id}.csv",
        mime="text/csv",
        key="rev_export",
        icon=":material/download:",
    )
    if frame.empty:
        st.info("No verdicts yet.")
        st.stop()
    stamp = (session.id, len(frame), str(frame["updated"].max()))
    table = _agreement(stamp, frame)
    st.caption(
        "Cohen's κ for each pair of readers and of each reader with the dataset label and with the model at "
        "the session's thresholds; Fleiss' κ when three or more readers called a finding. 95% bootstrap "
        "intervals over films. Agreement: share of films with the same call (Fleiss: unanimous). Under "
        f"{MIN_FILMS} films called by every rater compared there is no κ, agreement or interval (not enough "
        "films); κ also has no value when every call was the same."
    )
    st.dataframe(
        views.agreement_display(table),
        hide_index=True,
        key="rev_agreement",
        height=tables.table_height(min(len(table), 20)),
    )
    st.stop()

if view == "Adjudicate":
    listed = disagreements(frame, store.adjudications(session.id))
    if listed.empty:
        st.info(
            "No disagreement to adjudicate: readers agree with each other and with the dataset label."
        )
        st.stop()
    st.caption(
        f"{len(listed)} finding(s) where readers disagree with each other or with the dataset label; "
        f"{int(listed['adjudicated'].notna().sum())} adjudicated."
    )
    st.dataframe(
        views.disagreement_display(listed),
        hide_index=True,
        key="rev_disagreements",
        column_config={"Probability": st.column_config.NumberColumn(format="%.3f")},
    )
    keys = [f"{r.image_id} · {r.class_name}" for r in listed.itertuples()]
    if st.session_state.get("rev_adj_pick") not in range(len(keys)):
        st.session_state["rev_adj_pick"] = 0
    # outside the form: the film and the calls below must follow the pick before anything is recorded
    choice = st.selectbox(
        "Finding to decide", range(len(keys)), format_func=keys.__getitem__, key="rev_adj_pick"
    )
    row = listed.iloc[int(choice)]
    image_id, class_name = str(row["image_id"]), str(row["class_name"])
    calls = frame[
        (frame["image_id"] == image_id)
        & (frame["class_name"] == class_name)
        & (frame["reader_call"].astype(str) != "")
    ].sort_values("reviewer")
    everyone = store.readers(session.id)
    colours = {r: charts.MARK_COLOURS[i % len(charts.MARK_COLOURS)] for i, r in enumerate(everyone)}
    st.markdown(
        f"**{class_name}** on `{image_id}` · dataset label **{row['ground_truth']}** · model "
        f"**{row['model_call']}** ({fmt(row['probability'])}) · readers' calls:"
    )
    st.dataframe(
        views.reader_calls_display(calls),
        hide_index=True,
        key="rev_adj_calls",
        height=tables.table_height(len(calls)),
        column_config={
            c: st.column_config.TextColumn(width="small") for c in ("Reader", "Call", "Confidence")
        }
        | {"Where": st.column_config.TextColumn(width="large")},
    )
    left, right = st.columns([3, 2], gap="large")
    with right:
        with st.form("rev_adj_form", border=True):
            st.radio(
                "Final label",
                ("present", "absent"),
                index=None,
                horizontal=True,
                key="rev_adj_label",
            )
            st.text_input("Note", key="rev_adj_note")
            st.form_submit_button(
                "Record final label",
                type="primary",
                on_click=_adjudicate,
                args=(store, session.id, reader, image_id, class_name),
            )
    with left:
        record = run.predictions.iloc[int(film_findings(cases, image_id)["row"].iloc[0])]
        path = _film_path(record, image_id, state.data_roots())
        if path is not None:
            with cxr_errors():
                shown = review_media.shown(state.prefetcher(), str(path))
                drawn = [
                    charts.ShownMark(
                        r.reviewer,
                        mark,
                        colours.get(r.reviewer, charts.MARK_COLOURS[0]),
                        hover=views.call_hover(r._asdict(), mark),
                    )
                    for r in calls.itertuples(index=False)
                    if (mark := marks.from_columns(r._asdict())) is not None
                ]
                st.plotly_chart(
                    charts.film_figure(shown, drawn, height=_film_height(shown.shape)),
                    key=f"rev_adj_film@{image_id}@{class_name}",
                    config={"displaylogo": False},
                )
                unmarked = [r for r in calls["reviewer"] if r not in {d.label for d in drawn}]
                st.caption(
                    f"{image_id} · each reader's mark for {class_name} in their colour; drag to zoom, "
                    "double-click to reset"
                    + (f" · no mark from {', '.join(unmarked)}" if unmarked else "")
                )
    st.stop()

if view == "Corrected metrics":
    corrected = corrected_labels(frame, store.adjudications(session.id))
    if corrected.empty:
        st.info("No reader call yet: nothing to correct.")
        st.stop()
    table = _corrected_metrics(
        (run_key, session.id, int(pd.util.hash_pandas_object(corrected, index=False).sum())),
        run,
        thresholds,
        corrected,
        tuple(classes),
    )
    counts = corrected["source"].value_counts()
    st.caption(
        f"Corrected label = the adjudicated one ({int(counts.get('adjudicated', 0))}), else the readers' "
        f"majority ({int(counts.get('majority', 0))}; ties and unsure calls keep the dataset label). Metrics over "
        f"all {len(run.predictions)} {split} cases at the session's thresholds “{set_name}”, with 95% "
        "patient-level bootstrap intervals; the change's interval is paired (same resamples). A metric over "
        f"fewer than {MIN_POSITIVES} films (positives for sensitivity, films called positive for PPV, …) "
        "shows “not enough films”."
    )
    st.caption(views.corrected_note(table))
    shown = views.corrected_display(table)
    st.dataframe(
        shown, hide_index=True, key="rev_corrected", height=tables.table_height(len(shown))
    )
    st.stop()

# ---------------------------------------------------------------------------------- Read
focus, outcomes, order = None, None, ORDERS[0]
if session.mode == "unblinded":
    with filters:
        if st.session_state.get("rev_focus") not in classes:
            st.session_state["rev_focus"] = classes[0]
        focus = st.selectbox("Focus finding", classes, key="rev_focus")
        outcomes = st.multiselect(
            "Outcome of the focus finding",
            OUTCOMES,
            default=list(OUTCOMES),
            key="rev_outcomes",
            help="TP/FP/FN/TN at the session's thresholds"
            if multilabel
            else "against the most probable class",
        )
        order = st.selectbox("Order", ORDERS, key="rev_order")
else:
    filters.caption(
        "Films come in a fixed shuffle: filtering or sorting by outcome or probability would reveal "
        "what this mode hides."
    )
queue = film_queue(
    cases, session.mode, focus=focus, outcomes=outcomes, order=order, seed=session.id
)
if not queue:
    st.info("No film matches these filters. Choose other outcomes or another focus finding.")
    st.stop()
reviewed = reviewed_films(mine_all, reader, cases)
drafted = draft_films(store.drafts(session.id, reader)) if reader else set()
index = review_read.position(store, session.id, reader, queue)
image_id = queue[index]
review_read.keep_in_url(session.id, image_id)
state.film_viewed(image_id, "Review", session=session.id)  # audited once per film and session
st.session_state["rev_film_pick"] = index
picks[1].selectbox(
    f"Film (of {len(queue)}; ✓ read, ✎ unsaved draft)",
    range(len(queue)),
    key="rev_film_pick",
    format_func=lambda i: views.film_label(i, queue[i], queue[i] in reviewed, queue[i] in drafted),
    on_change=_pick_film,
    args=(store, session.id, reader, queue),
    label_visibility="collapsed",
)

findings = film_findings(cases, image_id)
record = run.predictions.iloc[int(findings["row"].iloc[0])]
done = image_id in reviewed
revealed = blinding.revealed_at is not None  # never in an unblinded session
show_model, show_label = visible(session.mode, done or revealed)
reading = review_read.Reading(
    store, session, reader, tuple(queue), index, findings, frozenset(reviewed), revealed, multilabel
)
viewport = review_read.viewport()


@st.fragment
def _grid(reading: review_read.Reading, show_model: bool, show_label: bool) -> None:
    """The call grid reruns on its own while the reader calls; saving or moving reruns the page."""
    rerun = st.session_state.pop(review_read.RERUN, False)
    calls = reading.calls()
    drafts = reading.store.drafts(reading.session.id, reading.reader) if reading.reader else []
    data = review_read.grid_data(
        reading, calls, show_model, show_label, draft_films(drafts), review_read.take_message(rerun)
    )
    call_grid.call_grid(
        data,
        key=review_read.GRID,
        on_edits=lambda: review_read.on_edits(reading),
        on_action=lambda: review_read.on_action(reading),
    )
    if rerun:
        st.rerun()


left, right = st.columns(review_read.column_weights(viewport, show_model), gap="small")
film_line = (
    f"**Image** `{image_id}`"
    + (
        f" · **patient** `{record.get('patient_id', '')}`"
        if state.may(roles.VIEW_PATIENT_DATA)
        else ""
    )
    + (" · :green[✓ reviewed by you]" if done else "")
)
with right:
    if revealed and not done:
        st.warning(views.revealed_text(blinding.revealed_at), icon=":material/visibility:")
    elif not show_model:
        st.caption("Blinded: the model's output and the label appear once you save.")
    elif not show_label:
        st.caption("Blinded to labels: the label appears once you save.")
    _grid(reading, show_model, show_label)

with left:
    path = _film_path(record, image_id, state.data_roots())
    if path is None:
        st.markdown(film_line)
    else:
        with cxr_errors():
            prefetcher = state.prefetcher()
            st.session_state.setdefault(METHOD_PREF, list(METHODS)[0])
            if st.session_state.get(HEAT_CLASS) not in classes:
                st.session_state[HEAT_CLASS] = classes[0]
            heat_class, opacity, method = st.session_state[HEAT_CLASS], 0.4, "none"
            tools = st.columns([1.4, 1], vertical_alignment="center")
            by = tools[0].radio(
                "Mark by",
                list(MARK_BY),
                format_func=MARK_BY.get,
                horizontal=True,
                key="rev_mark_by",
                label_visibility="collapsed",
            )
            with tools[1].popover("View", icon=":material/visibility:", width="stretch"):
                if show_model:
                    methods = (
                        ["none"] if entry.external else ["none", *list(METHODS)]
                    )  # external predictions have no weights to explain
                    st.session_state["rev_method"] = (
                        st.session_state[METHOD_PREF]
                        if st.session_state[METHOD_PREF] in methods
                        else "none"
                    )
                    method = st.selectbox(
                        "Heatmap",
                        methods,
                        key="rev_method",
                        on_change=lambda: st.session_state.update(
                            {METHOD_PREF: st.session_state["rev_method"]}
                        ),
                    )
                    st.session_state["rev_heat_class"] = heat_class
                    heat_class = st.selectbox(
                        "of finding",
                        classes,
                        key="rev_heat_class",
                        disabled=method == "none",
                        on_change=lambda: st.session_state.update(
                            {HEAT_CLASS: st.session_state["rev_heat_class"]}
                        ),
                    )
                    opacity = st.slider(
                        "Opacity", 0.0, 1.0, 0.4, 0.05, key="rev_opacity", disabled=method == "none"
                    )
                else:
                    st.caption("Heatmap hidden until you save: it shows where the model looks.")
                factor = st.select_slider(
                    "Zoom",
                    [1.0, 1.5, 2.0, 3.0, 4.0],
                    value=1.0,
                    key="rev_zoom",
                    format_func=lambda z: f"{z:g}×",
                )
                zx = st.slider("Centre x (%)", 0, 100, 50, key="rev_zoom_x", disabled=factor == 1.0)
                zy = st.slider("Centre y (%)", 0, 100, 50, key="rev_zoom_y", disabled=factor == 1.0)
            predictor = model_key = None
            if method != "none" or (show_model and index + 1 < len(queue)):
                predictor = state.predictor(entry)
                model_key = f"{entry.model_path}:{entry.model_path.stat().st_mtime}"

            def heat_of(chosen: str) -> review_media.HeatRequest | None:
                if chosen == "none" or predictor is None:
                    return None
                return review_media.HeatRequest(predictor, model_key, heat_class, chosen, opacity)

            shown = review_media.shown(prefetcher, str(path), heat_of(method))
            height, width = shown.shape
            drawn = [
                charts.ShownMark(name, mark, colour, saved=saved)
                for name, mark, colour, saved in review_read.drawn_marks(
                    reading.calls(), charts.MARK_COLOURS
                )
            ]
            armed = reading.armed()
            chart_key = (
                f"rev_where@{reading.token}@{by}@{armed}"
                f"@{st.session_state.get(review_read.MARK_SEQ, 0)}"
            )
            call_grid.viewport_probe(review_read.PROBE, viewport)
            st.plotly_chart(
                charts.film_figure(
                    shown,
                    drawn,
                    window=marks.zoom_window(width, height, factor, (zx / 100, zy / 100)),
                    selectable=armed is not None,
                    drag="select" if armed and by == "box" else "pan",
                    height=review_read.film_height(viewport, shown.shape, viewer.MAX_VIEW_HEIGHT),
                ),
                key=chart_key,
                selection_mode=("points", "box"),
                config={"displaylogo": False, "scrollZoom": False},
                on_select=(
                    (lambda: review_read.on_mark(reading, chart_key, width, height))
                    if armed
                    else "ignore"
                ),
            )
            st.markdown(film_line)
            st.caption(
                (f"{method} of {heat_class} · " if method != "none" else "")
                + (f"{factor:g}× zoom · " if factor > 1 else "")
                + f"**{views.mark_hint(by, armed)}**"
            )
            if index + 1 < len(queue):  # the next film is computed while this one is read
                following = run.predictions.iloc[
                    int(film_findings(cases, queue[index + 1])["row"].iloc[0])
                ]
                next_path = resolve_image_path(
                    str(following.get("path", "") or ""), queue[index + 1], state.data_roots()
                )
                if next_path is not None:
                    shown_next = visible(session.mode, queue[index + 1] in reviewed or revealed)[0]
                    next_method = (
                        st.session_state[METHOD_PREF]
                        if shown_next and not entry.external
                        else "none"
                    )
                    review_media.prefetch(prefetcher, str(next_path), heat_of(next_method))
