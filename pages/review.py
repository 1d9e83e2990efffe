"""Review: page through an evaluation run's cases (FP, FN, ...) and record a verdict on each."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import OUTCOMES, resolve_image_path, review_cases
from cxr_core.artifacts.review_store import EXPORT_COLUMNS, VERDICTS, ReviewStore
from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.errors import CXRError
from cxr_core.inference.explain import METHODS, explain, overlay
from cxr_core.inference.predictor import Predictor
from dashboard import state
from dashboard.widgets import cxr_errors, fmt, require_entry, split_picker

ORDERS = ("highest probability first", "lowest probability first", "closest to the threshold first")
VERDICT_LABELS = {"agree": "Agree with the model", "model_wrong": "Model is wrong", "label_wrong": "Label is wrong",
                  "unsure": "Unsure"}
POS, SESSION = "rev_pos", "rev_session_pick"
NEW = 0


@st.cache_data(max_entries=64, show_spinner=False)
def _image(path: str, mtime: float) -> LoadedImage:
    return load_image(path)


@st.cache_data(max_entries=64, show_spinner="Computing the heatmap…")
def _heatmap(model_key: str, path: str, mtime: float, class_name: str, method: str, _predictor: Predictor,
             _image: LoadedImage) -> np.ndarray:
    return explain(_predictor, _image, class_name, method)


def _filters() -> dict:
    return {"class": st.session_state["rev_class"], "outcomes": list(st.session_state["rev_outcomes"]),
            "order": st.session_state["rev_order"]}


def _resume(store: ReviewStore, classes: tuple[str, ...]) -> None:
    """Session picker callback: restore the session's filters and where its reviewer stopped."""
    session_id = st.session_state[SESSION]
    if session_id == NEW:
        return
    session = store.session(session_id)
    f = session.filters
    if f.get("class") in classes:
        st.session_state["rev_class"] = f["class"]
    if set(f.get("outcomes", [])) <= set(OUTCOMES):
        st.session_state["rev_outcomes"] = list(f["outcomes"])
    if f.get("order") in ORDERS:
        st.session_state["rev_order"] = f["order"]
    st.session_state[POS] = session.position
    st.session_state["rev_goto"] = session.position + 1


def _filters_changed(store: ReviewStore) -> None:
    st.session_state[POS] = 0
    st.session_state["rev_goto"] = 1
    if st.session_state.get(SESSION, NEW) != NEW:
        store.update_filters(st.session_state[SESSION], _filters(), 0)


def _go(store: ReviewStore, position: int, n_cases: int) -> None:
    position = int(min(max(position, 0), max(n_cases - 1, 0)))
    st.session_state[POS] = position
    st.session_state["rev_goto"] = position + 1
    if st.session_state.get(SESSION, NEW) != NEW:
        store.save_position(st.session_state[SESSION], position)


def _record(store: ReviewStore, session_id: int, image_id: str, class_name: str, case_key: str, position: int,
            n_cases: int, advance: bool) -> None:
    """Form callback: store the verdict, then optionally move on (before any widget is drawn)."""
    try:
        store.record(session_id, image_id, class_name, st.session_state[f"rev_verdict_{case_key}"],
                     st.session_state[f"rev_note_{case_key}"], st.session_state.get("rev_reviewer", ""))
    except CXRError as exc:
        st.session_state["rev_message"] = str(exc)
        return
    if advance:
        _go(store, position + 1, n_cases)


def _start(store: ReviewStore, checkpoint: str, split: str) -> None:
    name = st.session_state.get("rev_new_name", "").strip()
    try:
        session = store.create_session(name, checkpoint, split, _filters())
    except CXRError as exc:
        st.session_state["rev_message"] = str(exc)
        return
    st.session_state[SESSION] = session.id
    st.session_state[POS] = 0
    st.session_state["rev_goto"] = 1


st.title("Review")
entry = require_entry(need_eval=True)
split = split_picker(entry, key="rev_split")
run = state.eval_run(entry, split)
if run.predictions is None:
    st.warning(" ".join(run.warnings) or f"No predictions for the {split} split.")
    st.stop()
store = state.review_store()
multilabel = entry.card.get_label_space().multilabel
active = state.active_thresholds(entry)
checkpoint_id = str(entry.dir)

if st.session_state.get("rev_class") not in run.classes:  # first visit, or another checkpoint chosen
    st.session_state["rev_class"] = run.classes[0]
st.session_state.setdefault("rev_outcomes", ["FP", "FN"])
st.session_state.setdefault("rev_order", ORDERS[0])
st.session_state.setdefault(POS, 0)

sessions = [s for s in store.sessions(checkpoint_id) if s.eval_run == split]
labels = {NEW: "New session…"} | {s.id: f"{s.name} · started {s.created[:16].replace('T', ' ')}" for s in sessions}
if st.session_state.get(SESSION) not in labels:
    st.session_state[SESSION] = NEW
with st.container(border=True):
    c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
    c1.selectbox("Review session", list(labels), format_func=labels.__getitem__, key=SESSION,
                 on_change=_resume, args=(store, run.classes))
    session_id = st.session_state[SESSION]
    if session_id == NEW:
        c2.text_input("Session name", key="rev_new_name", placeholder="initials + date, e.g. AB 2024-05-01")
        c3.button("Start", key="rev_start", on_click=_start, args=(store, checkpoint_id, split), type="primary")
    else:
        c2.text_input("Reviewer", key="rev_reviewer", placeholder="your initials")
        rows = store.export_rows(session_id)
        buffer = io.StringIO()
        pd.DataFrame(rows, columns=list(EXPORT_COLUMNS)).to_csv(buffer, index=False)
        c3.download_button("Export CSV", buffer.getvalue(), file_name=f"review_session_{session_id}.csv",
                           mime="text/csv", key="rev_export", icon=":material/download:")
        st.caption(f"{len(rows)} verdict(s) recorded in this session · database: {store.path}")
    message = st.session_state.pop("rev_message", None)
    if message:
        st.error(message)

f1, f2, f3 = st.columns([2, 2, 2])
f1.selectbox("Class", run.classes, key="rev_class", on_change=_filters_changed, args=(store,))
f2.multiselect("Outcome", OUTCOMES, key="rev_outcomes", on_change=_filters_changed, args=(store,),
               help="TP/FP/FN/TN at the active thresholds" if multilabel else "against the most probable class")
f3.selectbox("Order", ORDERS, key="rev_order", on_change=_filters_changed, args=(store,))
st.session_state.setdefault(state.DATA_ROOT, os.pathsep.join(state.data_roots()))
st.session_state.setdefault("rev_data_root", st.session_state[state.DATA_ROOT])
st.text_input(f"Data root (folder(s) holding the evaluated images; separate several with '{os.pathsep}')",
              key="rev_data_root", on_change=lambda: st.session_state.update({state.DATA_ROOT: st.session_state["rev_data_root"]}),
              help="predictions.csv may store paths from another machine; images are looked for under these folders "
                   "by their relative path and image id. Default: $CXR_DATA_ROOT.")

class_name = st.session_state["rev_class"]
threshold = float(active.thresholds.get(class_name, 0.5))
cases = review_cases(run, class_name, threshold, multilabel=multilabel)
counts = cases["outcome"].value_counts()
st.caption(" · ".join(f"{o}: {int(counts.get(o, 0))}" for o in OUTCOMES)
           + (f" · threshold {threshold:.3f} (set “{active.name}”)" if multilabel else " · most probable class"))
cases = cases[cases["outcome"].isin(st.session_state["rev_outcomes"])]
order = st.session_state["rev_order"]
key = {ORDERS[0]: -cases["prob"], ORDERS[1]: cases["prob"], ORDERS[2]: cases["margin"].abs()}[order]
cases = cases.iloc[np.argsort(key.to_numpy(), kind="stable")]
cases = cases.reset_index(drop=True)
if cases.empty:
    st.info("No case matches these filters. Choose other outcomes or another class.")
    st.stop()

n = len(cases)
pos = int(min(st.session_state[POS], n - 1))
st.session_state.setdefault("rev_goto", pos + 1)
n1, n2, n3, n4 = st.columns([1, 1, 2, 4], vertical_alignment="bottom")
n1.button("◀ Previous", key="rev_prev", on_click=_go, args=(store, pos - 1, n), disabled=pos == 0)
n2.button("Next ▶", key="rev_next", on_click=_go, args=(store, pos + 1, n), disabled=pos >= n - 1)
n3.number_input(f"Case (of {n})", 1, n, key="rev_goto",
                on_change=lambda: _go(store, int(st.session_state["rev_goto"]) - 1, n))

case = cases.iloc[pos]
record = run.predictions.iloc[int(case["row"])]
truth = [c for c in run.classes if record.get(f"label:{c}") == 1]
probs = {c: float(record[f"prob:{c}"]) for c in run.classes}
if multilabel:
    predicted = [c for c in run.classes if probs[c] >= float(active.thresholds.get(c, 0.5))]
else:
    predicted = [max(probs, key=probs.get)]

left, right = st.columns([3, 2], gap="large")
with right:
    colour = {"TP": "green", "TN": "green", "FP": "red", "FN": "orange"}[case["outcome"]]
    st.markdown(f"### :{colour}[{case['outcome']}] · {class_name}")
    st.markdown(f"**Image** `{case['image_id']}` · **patient** `{case['patient_id']}`")
    st.markdown(f"**Probability** {fmt(case['prob'])}" + (f" vs threshold {threshold:.3f}" if multilabel else ""))
    st.markdown("**Ground truth:** " + (", ".join(truth) or "no finding among the model's classes"))
    st.markdown("**Model:** " + (", ".join(predicted) or "nothing above threshold"))
    if session_id == NEW:
        st.info("Start or resume a review session above to record verdicts.")
    else:
        existing = store.verdict(session_id, case["image_id"], class_name)
        if existing:
            st.caption(f"Recorded: **{VERDICT_LABELS[existing.verdict]}** ({existing.updated[:19].replace('T', ' ')})")
        case_key = f"{session_id}_{case['image_id']}_{class_name}"
        with st.form(key=f"rev_form_{case_key}", border=True):
            st.radio("Verdict", VERDICTS, format_func=VERDICT_LABELS.get, key=f"rev_verdict_{case_key}",
                     index=VERDICTS.index(existing.verdict) if existing else 0)
            st.text_area("Note", value=existing.note if existing else "", key=f"rev_note_{case_key}", height=80)
            b1, b2 = st.columns(2)
            record_args = (store, session_id, str(case["image_id"]), class_name, case_key, pos, n)
            b1.form_submit_button("Save verdict", type="primary", on_click=_record, args=(*record_args, False))
            b2.form_submit_button("Save and next", disabled=pos >= n - 1, on_click=_record, args=(*record_args, True))

with left:
    path = resolve_image_path(str(case["path"]), str(case["image_id"]), state.data_roots())
    if path is None:
        st.warning(
            f"Image `{case['image_id']}` is not reachable (recorded path: `{case['path'] or 'none'}`). "
            "Set **Data root** above to the folder that holds the dataset's images "
            "(e.g. the `nih14` folder for NIH ChestX-ray14), or start the dashboard with CXR_DATA_ROOT set."
        )
    else:
        with cxr_errors():
            mtime = Path(path).stat().st_mtime
            image = _image(str(path), mtime)
            g1, g2 = st.columns(2)
            methods = ["none"] if entry.external else ["none", *METHODS]  # no weights to explain external predictions
            method = g1.selectbox("Heatmap", methods, index=0 if entry.external else 1, key="rev_method")
            opacity = g2.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key="rev_opacity")
            if method == "none":
                st.image(image.pixels, clamp=True, caption=str(path), width="stretch")
            else:
                predictor = state.predictor(entry)
                model_key = f"{entry.model_path}:{entry.model_path.stat().st_mtime}"
                heat = _heatmap(model_key, str(path), mtime, class_name, method, predictor, image)
                a, b = st.columns(2)
                a.image(image.pixels, clamp=True, caption="Original", width="stretch")
                b.image(overlay(image.pixels, heat, opacity), caption=f"{method} · {class_name}", width="stretch")
