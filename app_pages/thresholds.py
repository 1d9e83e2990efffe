"""Thresholds: tune one decision threshold per class on an evaluation run, save named sets, view one in this
browser session, or make one the model's default for everyone (logged: who, when, from which, to which)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, EvalRun
from cxr_core.artifacts.run_dir import PREDICTIONS_FILE
from cxr_core.artifacts.thresholds_store import ThresholdStore
from cxr_core.errors import CXRError
from cxr_core.metrics import (
    DEFAULT_THRESHOLD,
    MAX_F1,
    METHOD_LABELS,
    SENSITIVITY,
    SPECIFICITY,
    YOUDEN,
    SortedScores,
    curves,
    select_thresholds,
)
from dashboard import charts, state, views
from dashboard.widgets import cxr_errors, fmt, require_entry, split_picker

PRESETS = (MAX_F1, YOUDEN, SENSITIVITY, SPECIFICITY)
GROUP_SIZE = 7
WORK = "thr_work"  # {checkpoint key: {class: threshold}} survives page switches
LAST_METHOD = "thr_last_method"
MESSAGE = "thr_message"


def slider_key(entry_name: str, class_name: str) -> str:
    """Scoped by checkpoint: two checkpoints sharing class names must not share sliders."""
    return f"thr::{entry_name}::{class_name}"


@st.cache_resource(max_entries=8, show_spinner=False)
def _sorted_scores(run_key: str, _run: EvalRun) -> SortedScores:
    return SortedScores(_run.labels(), _run.scores())


@st.cache_resource(max_entries=8, show_spinner=False)
def _curves(run_key: str, _run: EvalRun) -> list[dict]:
    return curves(_run.labels(), _run.scores(), max_points=300)


def _work(entry: CheckpointEntry, store: ThresholdStore) -> dict[str, float]:
    work = st.session_state.setdefault(WORK, {})
    if entry.key not in work:
        work[entry.key] = dict(store.active().thresholds)
    return work[entry.key]


def _set_all(values: dict[str, float], entry: CheckpointEntry, method: str) -> None:
    st.session_state[WORK][entry.key].update(values)
    for name, value in values.items():
        st.session_state[slider_key(entry.name, name)] = value
    st.session_state[LAST_METHOD] = method


def _apply_preset(
    run: EvalRun, entry: CheckpointEntry, method: str, target: float, only: str | None
) -> None:
    """Button callback: runs before the sliders are drawn, so it may set their values."""
    try:
        chosen = select_thresholds(
            run.labels(),
            run.scores(),
            method,
            target if method in (SENSITIVITY, SPECIFICITY) else None,
        )
    except CXRError as exc:
        st.session_state[MESSAGE] = ("error", str(exc))
        return
    values, undefined = {}, []
    for name, value in zip(run.classes, chosen):
        if only is not None and name != only:
            continue
        if math.isnan(value):
            undefined.append(name)
        else:
            values[name] = float(min(max(value, 0.0), 1.0))
    label = METHOD_LABELS[method] + (
        f" ≥ {target:.2f}" if method in (SENSITIVITY, SPECIFICITY) else ""
    )
    _set_all(values, entry, label)
    note = f"Applied “{label}” to {len(values)} class(es)."
    if undefined:
        note += (
            f" Undefined (no known positives/negatives), left unchanged: {', '.join(undefined)}."
        )
    st.session_state[MESSAGE] = ("info", note)


def _load_set(store: ThresholdStore, entry: CheckpointEntry, name: str) -> None:
    try:
        loaded = store.load(name)
    except CXRError as exc:
        st.session_state[MESSAGE] = ("error", str(exc))
        return
    _set_all(loaded.thresholds, entry, loaded.method or f"set '{name}'")
    st.session_state[MESSAGE] = ("info", f"Loaded threshold set “{name}” into the sliders.")


def _make_default(store: ThresholdStore, entry: CheckpointEntry, name: str) -> None:
    """Button callback (before anything is drawn, so the sidebar and every page show the new default)."""
    reader = state.reader()
    if not reader:
        st.session_state[MESSAGE] = (
            "error",
            "Enter your name as Reader in the sidebar first: "
            "changing the model's default is logged with who did it.",
        )
        return
    try:
        entry_log = store.set_active(name, by=reader)
    except CXRError as exc:
        st.session_state[MESSAGE] = ("error", str(exc))
        return
    state.view_set(entry, None)  # this reader now follows the new default
    state.acknowledge_default_changes(entry)  # and has seen the change they made
    st.session_state[MESSAGE] = (
        "info",
        f"“{name}” is now the default threshold set of {entry.name} for everyone "
        f"(was “{entry_log['from']}”; recorded as changed by {reader}).",
    )


def _view(entry: CheckpointEntry, name: str) -> None:
    try:
        state.view_set(entry, name)
    except CXRError as exc:
        st.session_state[MESSAGE] = ("error", str(exc))
        return
    who = f"You ({state.reader()}) now read" if state.reader() else "This browser now reads"
    kept = (
        "kept under your name across reloads"
        if state.reader()
        else "for this browser session only: enter your name as Reader to keep it"
    )
    st.session_state[MESSAGE] = (
        "info",
        f"{who} with “{name}” on Predict, Performance and Review ({kept}); other readers are not affected.",
    )


def _metrics_frame(
    classes: tuple[str, ...], thresholds: np.ndarray, m: dict[str, np.ndarray], scores: SortedScores
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "class": classes,
            "threshold": thresholds,
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
            "ppv": m["ppv"],
            "npv": m["npv"],
            "f1": m["f1"],
            "tp": m["tp"],
            "fp": m["fp"],
            "tn": m["tn"],
            "fn": m["fn"],
            "n_pos": scores.n_pos,
            "n_neg": scores.n_neg,
        }
    )


def _editor(entry: CheckpointEntry, run: EvalRun, run_key: str) -> None:
    """Fragment: a slider move reruns only this, recomputing every class's counts by binary search."""
    work = st.session_state[WORK][entry.key]
    scores = _sorted_scores(run_key, run)
    classes = run.classes
    left, right = st.columns([1, 1], gap="large")
    with left:
        groups = [classes[i : i + GROUP_SIZE] for i in range(0, len(classes), GROUP_SIZE)]
        for g, group in enumerate(groups):
            title = f"{group[0]} … {group[-1]}" if len(groups) > 1 else "Classes"
            with st.expander(title, expanded=g == 0):
                for name in group:
                    key = slider_key(entry.name, name)
                    if key not in st.session_state:
                        st.session_state[key] = float(work.get(name, DEFAULT_THRESHOLD))
                    st.slider(name, 0.0, 1.0, step=0.001, format="%.3f", key=key)
    for name in classes:
        work[name] = float(st.session_state[slider_key(entry.name, name)])
    vector = np.array([work[c] for c in classes])
    m = scores.metrics_at(vector)
    with left:
        st.dataframe(
            _metrics_frame(classes, vector, m, scores),
            hide_index=True,
            key="thr_table",
            column_config={
                k: st.column_config.NumberColumn(format="%.3f")
                for k in ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")
            },
        )
    with right:
        focus = st.selectbox("Class in detail", classes, key=f"thr_focus@{entry.name}")
        c = classes.index(focus)
        st.markdown(
            f"**{focus}** at threshold **{vector[c]:.3f}** · {int(scores.n_pos[c])} positives, "
            f"{int(scores.n_neg[c])} negatives"
        )
        a, b, d = st.columns(3)
        a.metric("Sensitivity", fmt(m["sensitivity"][c]))
        b.metric("Specificity", fmt(m["specificity"][c]))
        d.metric("F1", fmt(m["f1"][c]))
        a.metric("PPV", fmt(m["ppv"][c]))
        b.metric("NPV", fmt(m["npv"][c]))
        d.metric("Called positive", f"{int(m['tp'][c] + m['fp'][c])}")
        st.dataframe(
            pd.DataFrame(
                {"predicted +": [m["tp"][c], m["fp"][c]], "predicted −": [m["fn"][c], m["tn"][c]]},
                index=["truly +", "truly −"],
            ).astype("Int64"),
            key="thr_confusion",
        )
        roc = _curves(run_key, run)[c]["roc"]
        point = (1.0 - m["specificity"][c], m["sensitivity"][c])
        fig = charts.roc_figure({focus: roc}, {focus: point}, title=f"ROC · {focus}")
        fig.update_layout(height=340, showlegend=False)
        st.plotly_chart(fig, key="thr_roc")


editor = st.fragment(_editor)

st.title("Thresholds")
entry = require_entry(need_eval=True)
store = state.threshold_store(
    entry
)  # saves and default changes: checked against your role, audited
if not entry.card.get_label_space().multilabel:
    st.info(
        f"{entry.name} is a multiclass model: it reports the single most probable class, so there are no "
        "per-class thresholds to tune. See the Performance page for its confusion matrix."
    )
    st.stop()
split = split_picker(entry, key="thr_split")
run = state.eval_run(entry, split)
if run.predictions is None:
    st.warning(" ".join(run.warnings) or f"No predictions for the {split} split.")
    st.stop()
run_key = f"{run.dir}:{len(run.predictions)}:{(run.dir / PREDICTIONS_FILE).stat().st_mtime}"
work = _work(entry, store)
in_force = state.active_thresholds(entry).name
st.caption(
    f"Tuning on **{len(run.predictions)}** {split} cases of **{entry.name}**. Model default: "
    f"**{store.active_name()}** · in force for you: **{in_force}**."
)

with st.container(border=True):
    st.markdown("**Presets**")
    p1, p2, p3, p4 = st.columns([3, 1.3, 2, 1.4], vertical_alignment="bottom")
    method = p1.selectbox("Rule", PRESETS, format_func=METHOD_LABELS.get, key="thr_preset")
    target = p2.number_input(
        "Target",
        0.0,
        1.0,
        0.9,
        0.01,
        key="thr_target",
        disabled=method not in (SENSITIVITY, SPECIFICITY),
        help="sensitivity or specificity to reach",
    )
    scope = p3.selectbox("Apply to", ["all classes", *run.classes], key=f"thr_scope@{entry.name}")
    p4.button(
        "Apply preset",
        key="thr_apply",
        on_click=_apply_preset,
        icon=":material/tune:",
        args=(run, entry, method, float(target), None if scope == "all classes" else scope),
    )
message = st.session_state.pop(MESSAGE, None)
if message:
    (st.error if message[0] == "error" else st.info)(message[1])

editor(entry, run, run_key)

st.subheader("Saved threshold sets")
names = store.names()
s1, s2 = st.columns(2)
with s1.container(border=True):
    st.markdown("**Save the sliders as a set**")
    name = st.text_input("Name", key="thr_save_name", placeholder="e.g. screening-high-sensitivity")
    notes = st.text_input("Notes", key="thr_save_notes", placeholder="why these values")
    if name.strip() in names:
        st.caption(
            f"“{name.strip()}” exists; saving keeps its previous version in thresholds/history/."
        )
    if st.button("Save set", key="thr_save", icon=":material/save:", disabled=not name.strip()):
        with cxr_errors():
            saved = store.save(
                name, work, method=st.session_state.get(LAST_METHOD, "manual"), notes=notes
            )
            st.success(f"Saved “{saved.name}” to {store.folder}.")
            names = store.names()
with s2.container(border=True):
    st.markdown("**Load, view or make a set the default**")
    chosen = st.selectbox("Set", names, index=names.index(store.active_name()), key="thr_pick")
    b1, b2, b3 = st.columns(3)
    b1.button("Load into sliders", key="thr_load", on_click=_load_set, args=(store, entry, chosen))
    b2.button(
        "Use for me",
        key="thr_view",
        on_click=_view,
        args=(entry, chosen),
        help="Only you: Predict, Performance and Review use this set for you (kept under your "
        "reader name; without a name, for this browser session).",
    )
    b3.button(
        "Make default for everyone",
        key="thr_activate",
        type="primary",
        on_click=_make_default,
        args=(store, entry, chosen),
        disabled=chosen == store.active_name() or not state.reader(),
        help="Changes what every reader sees; recorded with your name and the time."
        + ("" if state.reader() else " Enter your name as Reader in the sidebar first."),
    )
    log = store.activations()
    if log:
        st.caption("Default-set changes (newest first)")
        st.dataframe(views.activation_log(log), hide_index=True, key="thr_audit")

if len(names) > 1:
    with st.expander("Compare two sets", expanded=False):
        c1, c2 = st.columns(2)
        first = c1.selectbox("First", names, index=0, key="thr_cmp_a")
        second = c2.selectbox("Second", names, index=1, key="thr_cmp_b")
        with cxr_errors():
            frame = store.compare(first, second)
            scores = _sorted_scores(run_key, run)
            for label, set_name in (("first", first), ("second", second)):
                m = scores.metrics_at(
                    np.array([store.load(set_name).thresholds[c] for c in run.classes])
                )
                frame[f"sensitivity ({label})"] = m["sensitivity"]
                frame[f"specificity ({label})"] = m["specificity"]
            st.dataframe(
                frame,
                hide_index=True,
                key="thr_compare",
                column_config={
                    k: st.column_config.NumberColumn(format="%.3f")
                    for k in frame.columns
                    if k != "class"
                },
            )
