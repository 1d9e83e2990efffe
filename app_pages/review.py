"""Review: a team of named readers reads films one at a time and calls each finding; agreement between
readers, adjudication of disagreements, and metrics with the corrected labels."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import OUTCOMES, resolve_image_path
from cxr_core.artifacts.review_store import FINDINGS, MODES, REASONS, ReviewStore
from cxr_core.artifacts.run_dir import PREDICTIONS_FILE
from cxr_core.errors import CXRError
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
    next_unreviewed,
    reader_blinding,
    resume_index,
    reviewed_films,
    session_classes,
    session_films,
    session_thresholds,
    verdict_for,
    verdict_frame,
    visible,
)
from cxr_core.inference.explain import METHODS, overlay
from cxr_core.metrics import MIN_POSITIVES
from cxr_core.metrics.agreement import MIN_FILMS
from cxr_core.utils.csv_safe import records_csv_text
from dashboard import charts, marks, review_media, state, tables, viewer, views

try:  # optional: keyboard shortcuts for the reading buttons (a small, pure-Python component)
    from streamlit_shortcuts import add_shortcuts
except ImportError:  # pragma: no cover - the page works without it, by mouse
    add_shortcuts = None
from dashboard.widgets import cxr_errors, fmt, require_entry, split_picker

SESSION = "rev_session_pick"
NEW = 0
VIEWS = ("Read", "Agreement", "Adjudicate", "Corrected metrics")
# Alt combinations only: plain letters would fire while a reader types a note.
SHORTCUTS = {
    "rev_save": "alt+s",
    "rev_save_next": "alt+enter",
    "rev_prev": "alt+arrowleft",
    "rev_next": "alt+arrowright",
    "rev_next_open": "alt+u",
}
MESSAGE = "rev_message"
METHOD_PREF, HEAT_CLASS = "rev_method_pref", "rev_heat_class_pref"
MARKS = "rev_marks"  # marks placed on the film, not saved yet: {(form key, finding): Mark, or None once cleared}
MARK_BY = {"point": "Point (click)", "box": "Box (drag)"}
# Width of the film column at the design viewport (viewer.CONTENT_WIDTH: 3 of 5 parts, less the gap), measured
# in Chromium; the figure is this tall for a square film, so no empty band shows under it.
FILM_WIDTH = 555


def _pos_key(session_id: int, reader: str) -> str:
    return f"rev_pos@{session_id}@{reader}"


def _go(store: ReviewStore, session_id: int, reader: str, queue: list[str], index: int) -> None:
    """Move this reader to film ``index`` (kept per reader, by film, so filter changes do not lose it)."""
    if not queue:
        return
    index = int(min(max(index, 0), len(queue) - 1))
    st.session_state[_pos_key(session_id, reader)] = (index, queue[index])
    if reader:
        try:
            store.save_position(session_id, index, reviewer=reader, image_id=queue[index])
        except CXRError as exc:
            st.session_state[MESSAGE] = str(exc)


def _pick_film(store: ReviewStore, session_id: int, reader: str, queue: list[str]) -> None:
    _go(store, session_id, reader, queue, int(st.session_state["rev_film_pick"]))


def _field(kind: str, form_key: str, class_name: str) -> str:
    return f"rev_{kind}@{form_key}@{class_name}"


def _save(
    store: ReviewStore,
    session_id: int,
    reader: str,
    form_key: str,
    findings: pd.DataFrame,
    queue: list[str],
    index: int,
    saved_marks: dict,
    advance: bool,
) -> None:
    """Form callback: store this reader's call (and mark) on every finding they called, then optionally move on."""
    if not reader:
        st.session_state[MESSAGE] = (
            "Enter your name as Reader in the sidebar before saving: every verdict says who gave it."
        )
        return
    saved, missing = 0, []
    pending = st.session_state.setdefault(MARKS, {})
    try:
        for f in findings.itertuples(index=False):
            call = st.session_state.get(_field("call", form_key, f.class_name))
            if call is None:
                missing.append(f.class_name)
                continue
            mark = pending.get((form_key, f.class_name), saved_marks.get(f.class_name))
            store.record(
                session_id,
                f.image_id,
                f.class_name,
                verdict_for(call, f.label, f.model_positive),
                st.session_state.get(_field("note", form_key, f.class_name), ""),
                reader,
                finding=call,
                confidence=st.session_state.get(_field("conf", form_key, f.class_name)),
                reason=st.session_state.get(_field("reason", form_key, f.class_name)) or "",
                point=mark.point if mark else None,
                box=mark.box if mark else None,
            )
            pending.pop((form_key, f.class_name), None)
            saved += 1
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)
        return
    if missing:
        st.session_state[MESSAGE] = (
            f"Saved {saved} call(s); still to call on this film: {', '.join(missing)}."
            if saved
            else "Choose Present, Absent or Unsure for at least one finding."
        )
        return
    if advance:
        _go(store, session_id, reader, queue, index + 1)


def _marked(chart_key: str, form_key: str, class_name: str, width: int, height: int) -> None:
    """Viewer callback: a click or a box drag on the film becomes this finding's (unsaved) mark."""
    mark = marks.from_selection(
        (st.session_state.get(chart_key) or {}).get("selection"), width, height
    )
    if mark is not None:
        st.session_state.setdefault(MARKS, {})[(form_key, class_name)] = mark


def _clear_mark(form_key: str, class_name: str) -> None:
    st.session_state.setdefault(MARKS, {})[(form_key, class_name)] = None


def _film_height(shape: tuple[int, ...]) -> int:
    """Figure height that shows the whole film at the column's width (tall films capped to fit a laptop)."""
    return int(min(viewer.MAX_VIEW_HEIGHT, FILM_WIDTH * shape[0] / shape[1]))


def _image_folder() -> list[str]:
    """The data-root box (predictions may store another machine's paths); returns the folders searched."""
    with st.expander("Image folder", expanded=False):
        st.session_state.setdefault(state.DATA_ROOT, os.pathsep.join(state.data_roots()))
        st.session_state.setdefault("rev_data_root", st.session_state[state.DATA_ROOT])
        st.text_input(
            f"Data root (folder(s) holding the evaluated images; separate several with '{os.pathsep}')",
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
            "Set **Data root** above to the folder that holds the dataset's images "
            "(e.g. the `nih14` folder for NIH ChestX-ray14), or start the dashboard with CXR_DATA_ROOT set."
        )
    return path


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


st.title("Review")
entry = require_entry(need_eval=True)
split = split_picker(entry, key="rev_split")
run = state.eval_run(entry, split)
if run.predictions is None:
    st.warning(" ".join(run.warnings) or f"No predictions for the {split} split.")
    st.stop()
store = state.review_store()
multilabel = entry.card.get_label_space().multilabel
in_force = state.active_thresholds(entry)
checkpoint_id = str(entry.dir)
reader = state.reader()

sessions = [s for s in store.sessions(checkpoint_id) if s.eval_run == split]
labels = {NEW: "New session…"} | {
    s.id: f"{s.name} · {views.MODE_LABELS[s.mode].split(' (')[0]} · started {s.created[:16].replace('T', ' ')}"
    for s in sessions
}
if st.session_state.get(SESSION) not in labels:
    st.session_state[SESSION] = NEW
with st.container(border=True):
    st.selectbox("Review session", list(labels), format_func=labels.__getitem__, key=SESSION)
    session_id = st.session_state[SESSION]
    if session_id == NEW:
        c1, c2 = st.columns(2)
        c1.text_input(
            "Session name",
            key="rev_new_name",
            placeholder="team + date, e.g. chest team 2024-05-01",
        )
        c2.selectbox("Reading mode", MODES, format_func=views.MODE_LABELS.get, key="rev_new_mode")
        st.session_state.setdefault("rev_new_classes", list(run.classes))
        st.multiselect(
            "Findings every reader calls on each film", run.classes, key="rev_new_classes"
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
    st.caption(
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

view = st.radio("View", VIEWS, horizontal=True, key="rev_view", label_visibility="collapsed")
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
        path = _film_path(record, image_id, _image_folder())
        if path is not None:
            with cxr_errors():
                shown = review_media.display(
                    review_media.image(state.prefetcher(), str(path)).pixels
                )
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
    f1, f2, f3 = st.columns(3)
    if st.session_state.get("rev_focus") not in classes:
        st.session_state["rev_focus"] = classes[0]
    focus = f1.selectbox("Focus finding", classes, key="rev_focus")
    st.session_state.setdefault("rev_outcomes", list(OUTCOMES))
    outcomes = f2.multiselect(
        "Outcome of the focus finding",
        OUTCOMES,
        key="rev_outcomes",
        help="TP/FP/FN/TN at the session's thresholds"
        if multilabel
        else "against the most probable class",
    )
    order = f3.selectbox("Order", ORDERS, key="rev_order")
else:
    st.caption(
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
pos_key = _pos_key(session.id, reader)
saved_pos = st.session_state.get(pos_key) or (
    store.reader_position(session.id, reader) if reader else None
)
index = resume_index(queue, saved_pos)
st.session_state[pos_key] = (index, queue[index])
n_done = sum(1 for f in queue if f in reviewed)
st.progress(n_done / len(queue), text=views.progress_text(n_done, len(queue), reader))

n1, n2, n3, n4 = st.columns([1, 1, 1.6, 4], vertical_alignment="bottom")
n1.button(
    "◀ Previous",
    key="rev_prev",
    on_click=_go,
    args=(store, session.id, reader, queue, index - 1),
    disabled=index == 0,
)
n2.button(
    "Next ▶",
    key="rev_next",
    on_click=_go,
    args=(store, session.id, reader, queue, index + 1),
    disabled=index >= len(queue) - 1,
)
upcoming = next_unreviewed(queue, reviewed, index)
n3.button(
    "Next unreviewed",
    key="rev_next_open",
    on_click=_go,
    args=(store, session.id, reader, queue, upcoming or 0),
    disabled=upcoming is None or upcoming == index,
)
st.session_state["rev_film_pick"] = index
n4.selectbox(
    f"Film (of {len(queue)}; ✓ reviewed by you)",
    range(len(queue)),
    key="rev_film_pick",
    format_func=lambda i: views.film_label(i, queue[i], queue[i] in reviewed),
    on_change=_pick_film,
    args=(store, session.id, reader, queue),
)

image_id = queue[index]
findings = film_findings(cases, image_id)
record = run.predictions.iloc[int(findings["row"].iloc[0])]
mine = {v.class_name: v for v in mine_all if v.image_id == image_id}
done = image_id in reviewed
revealed = blinding.revealed_at is not None  # never in an unblinded session
show_model, show_label = visible(session.mode, done or revealed)
form_key = f"{session.id}@{reader}@{image_id}"
saved_marks = {c: marks.stored(v.point, v.box) for c, v in mine.items()}
pending = st.session_state.get(MARKS, {})
where = {
    c: pending[(form_key, c)] if (form_key, c) in pending else saved_marks.get(c) for c in classes
}

left, right = st.columns([3, 2], gap="large")
with right:
    st.markdown(
        f"**Image** `{image_id}` · **patient** `{record.get('patient_id', '')}`"
        + (" · :green[✓ reviewed by you]" if done else "")
    )
    if revealed and not done:
        st.warning(views.revealed_text(blinding.revealed_at), icon=":material/visibility:")
    elif not show_model:
        st.caption(
            "Blinded: the model's output and the dataset label appear once you have saved your calls."
        )
    elif not show_label:
        st.caption("Blinded to labels: the dataset label appears once you have saved your calls.")
    with st.form(key=f"rev_form@{form_key}", border=True):
        for f in findings.itertuples(index=False):
            v = mine.get(f.class_name)
            facts = []
            if show_model:
                facts.append(
                    f"model {fmt(f.prob)}"
                    + (
                        f" (threshold {f.threshold:.3f}) → "
                        f"{'present' if f.model_positive else 'absent'}"
                        if multilabel
                        else ""
                    )
                )
            if show_label:
                facts.append(f"label {'present' if f.label == 1 else 'absent'}")
            if show_model and show_label:
                facts.append(f"**{f.outcome}**")
            st.markdown(f"**{f.class_name}**" + (" · " + " · ".join(facts) if facts else ""))
            c1, c2 = st.columns([3, 2])
            c1.radio(
                "Your call",
                FINDINGS,
                format_func=views.CALL_LABELS.get,
                horizontal=True,
                index=FINDINGS.index(v.finding)
                if v is not None and v.finding in FINDINGS
                else None,
                key=_field("call", form_key, f.class_name),
                disabled=revealed and v is None,
            )
            c2.selectbox(
                "Confidence (1–5)",
                [None, 1, 2, 3, 4, 5],
                key=_field("conf", form_key, f.class_name),
                index=[None, 1, 2, 3, 4, 5].index(v.confidence if v is not None else None),
                format_func=lambda c: "—" if c is None else str(c),
            )
            with st.expander("Reason and note", expanded=False):
                st.selectbox(
                    "Reason",
                    REASONS,
                    format_func=views.reason_label,
                    key=_field("reason", form_key, f.class_name),
                    index=REASONS.index(v.reason) if v is not None and v.reason in REASONS else 0,
                )
                st.text_input(
                    "Note",
                    value=v.note if v is not None else "",
                    key=_field("note", form_key, f.class_name),
                )
            st.caption(views.where_text(where.get(f.class_name), saved_marks.get(f.class_name)))
            if v is not None and show_model:
                st.caption(
                    f"Saved {v.updated[11:19]} UTC · your call **{views.CALL_LABELS.get(v.finding, '?')}** → "
                    f"{views.VERDICT_LABELS.get(v.verdict, '')}"
                )
        b1, b2 = st.columns(2)
        save_args = (store, session.id, reader, form_key, findings, queue, index, saved_marks)
        frozen = not reader or (revealed and not mine)  # nothing this reader may save on this film
        b1.form_submit_button(
            "Save",
            type="primary",
            on_click=_save,
            args=(*save_args, False),
            disabled=frozen,
            key="rev_save",
            help="Alt+S",
        )
        b2.form_submit_button(
            "Save and next",
            on_click=_save,
            args=(*save_args, True),
            key="rev_save_next",
            disabled=frozen or index >= len(queue) - 1,
            help="Alt+Enter",
        )
    if add_shortcuts is not None:
        add_shortcuts(**SHORTCUTS)
        st.caption(
            "Keys: Alt+S save · Alt+Enter save and next · Alt+←/→ previous/next · Alt+U next unreviewed"
        )

with left:
    roots = _image_folder()
    path = _film_path(record, image_id, roots)
    if path is not None:
        with cxr_errors():
            prefetcher = state.prefetcher()
            st.session_state.setdefault(METHOD_PREF, list(METHODS)[0])
            if st.session_state.get(HEAT_CLASS) not in classes:
                st.session_state[HEAT_CLASS] = classes[0]
            heat_class, opacity, method = st.session_state[HEAT_CLASS], 0.4, "none"
            if show_model:
                g1, g2, g3 = st.columns(3)
                methods = (
                    ["none"] if entry.external else ["none", *list(METHODS)]
                )  # external predictions have no weights to explain
                st.session_state["rev_method"] = (
                    st.session_state[METHOD_PREF]
                    if st.session_state[METHOD_PREF] in methods
                    else "none"
                )
                method = g1.selectbox(
                    "Heatmap",
                    methods,
                    key="rev_method",
                    on_change=lambda: st.session_state.update(
                        {METHOD_PREF: st.session_state["rev_method"]}
                    ),
                )
                st.session_state["rev_heat_class"] = heat_class
                heat_class = g2.selectbox(
                    "of finding",
                    classes,
                    key="rev_heat_class",
                    disabled=method == "none",
                    on_change=lambda: st.session_state.update(
                        {HEAT_CLASS: st.session_state["rev_heat_class"]}
                    ),
                )
                opacity = g3.slider(
                    "Opacity", 0.0, 1.0, 0.4, 0.05, key="rev_opacity", disabled=method == "none"
                )
            else:
                st.caption("Heatmap hidden until you save: it shows where the model looks.")
            z1, z2, z3 = st.columns(3)
            factor = z1.select_slider(
                "Zoom",
                [1.0, 1.5, 2.0, 3.0, 4.0],
                value=1.0,
                key="rev_zoom",
                format_func=lambda z: f"{z:g}×",
            )
            zx = z2.slider("Centre x (%)", 0, 100, 50, key="rev_zoom_x", disabled=factor == 1.0)
            zy = z3.slider("Centre y (%)", 0, 100, 50, key="rev_zoom_y", disabled=factor == 1.0)
            m1, m2, m3 = st.columns([2, 2, 1], vertical_alignment="bottom")
            if st.session_state.get("rev_mark_class") not in classes:
                st.session_state["rev_mark_class"] = focus if focus in classes else classes[0]
            mark_class = m1.selectbox("Mark where for", classes, key="rev_mark_class")
            by = m2.radio(
                "Mark by",
                list(MARK_BY),
                format_func=MARK_BY.get,
                horizontal=True,
                key="rev_mark_by",
            )
            m3.button(
                "Clear mark",
                key="rev_clear_mark",
                on_click=_clear_mark,
                args=(form_key, mark_class),
                disabled=where.get(mark_class) is None,
            )
            image = review_media.image(prefetcher, str(path))
            predictor = model_key = None
            if method != "none" or index + 1 < len(queue):
                predictor = state.predictor(entry)
                model_key = f"{entry.model_path}:{entry.model_path.stat().st_mtime}"
            if method == "none":
                shown = review_media.display(image.pixels)
            else:
                heat = review_media.heatmap(
                    prefetcher, predictor, model_key, str(path), heat_class, method
                )
                shown = viewer.resize_for_view(overlay(image.pixels, heat, opacity))
            height, width = shown.shape[:2]
            drawn = [
                charts.ShownMark(
                    c,
                    where[c],
                    charts.MARK_COLOURS[i % len(charts.MARK_COLOURS)],
                    saved=where[c] == saved_marks.get(c),
                )
                for i, c in enumerate(classes)
                if where.get(c) is not None
            ]
            chart_key = f"rev_where@{form_key}@{mark_class}@{by}"
            st.plotly_chart(
                charts.film_figure(
                    shown,
                    drawn,
                    window=marks.zoom_window(width, height, factor, (zx / 100, zy / 100)),
                    selectable=True,
                    drag="select" if by == "box" else "pan",
                    height=_film_height(shown.shape),
                ),
                key=chart_key,
                selection_mode=("points", "box"),
                config={"displaylogo": False, "scrollZoom": False},
                on_select=lambda: _marked(chart_key, form_key, mark_class, width, height),
            )
            st.caption(
                (f"{method} · {heat_class} · " if method != "none" else "")
                + f"{image_id}"
                + (f" · {factor:g}× zoom" if factor > 1 else "")
                + f" · **{views.mark_hint(by, mark_class)}**"
            )
            if index + 1 < len(queue):  # the next film is computed while this one is read
                following = run.predictions.iloc[
                    int(film_findings(cases, queue[index + 1])["row"].iloc[0])
                ]
                next_path = resolve_image_path(
                    str(following.get("path", "") or ""), queue[index + 1], roots
                )
                if next_path is not None:
                    shown_next = visible(session.mode, queue[index + 1] in reviewed or revealed)[0]
                    review_media.prefetch(
                        prefetcher,
                        str(next_path),
                        predictor,
                        model_key or "",
                        heat_class,
                        st.session_state[METHOD_PREF] if shown_next else "none",
                    )
