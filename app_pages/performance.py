"""Performance: per-class metrics with confidence intervals, ROC/PR curves, calibration, training curves."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, load_training_log
from cxr_core.evaluation import saved_runs
from cxr_core.evaluation.saved_runs import BOOTSTRAP_AT_OTHER_THRESHOLDS
from cxr_core.metrics import DEFAULT_THRESHOLD
from cxr_core.utils.csv_safe import frame_csv_text
from dashboard import charts, evaluation_cache, gallery_view, state
from dashboard.evaluation_views import (
    AS_EVALUATED,
    threshold_source_note,
    threshold_table_captions,
    threshold_table_options,
)
from dashboard.performance_tables import curve_legend, per_class_tables
from dashboard.subgroup_view import render_calibration_change, render_subgroups
from dashboard.tables import fmt, metrics_table, table_height
from dashboard.truth_view import render_second_truth
from dashboard.widgets import require_entry, split_picker


def _training_section(entry: CheckpointEntry) -> None:
    log = load_training_log(entry)
    if log.empty:
        st.caption(
            "An ensemble: each member's training is summarised in its model card (Models page)."
            if entry.card.members
            else "No training_log.jsonl in this checkpoint folder."
        )
        return
    numeric = [c for c in log.columns if pd.api.types.is_numeric_dtype(log[c]) and c != "epoch"]
    losses = [c for c in numeric if "loss" in c]
    others = [
        c
        for c in numeric
        if c not in losses and c not in ("seconds", "lr") and not c.endswith(("seconds", ".lr"))
    ]
    left, right = st.columns(2)
    if losses:
        left.plotly_chart(charts.training_figure(log, losses, "Loss"), key="perf_loss")
    if others:
        picked = right.multiselect(
            "Validation metrics", others, default=others[:4], key=f"perf_train_metrics@{entry.name}"
        )
        if picked:
            right.plotly_chart(
                charts.training_figure(log, picked, "Validation metrics"), key="perf_val_curves"
            )
    with st.expander("Training log table"):
        st.dataframe(log, hide_index=True, key="perf_log_table", height=table_height(len(log)))


st.title("Performance")
entry = require_entry(need_eval=True)
split = split_picker(entry, key="perf_split")
run = state.eval_run(entry, split)
for warning in run.warnings:
    st.caption(f"⚠ {warning}")
label_space = entry.card.get_label_space()
task, multilabel = label_space.task, label_space.multilabel
active = state.active_thresholds(entry) if multilabel else None
has_predictions = run.predictions is not None

report = run.report
source = f"report.json of the {split} run"
recomputed_with = None
if has_predictions and multilabel:
    options = threshold_table_options(active.name, report is not None)
    choice = st.radio(
        "Thresholds for the table",
        options,
        captions=threshold_table_captions(options),
        horizontal=True,
        key="perf_threshold_source",
    )
    if choice != AS_EVALUATED:
        report = evaluation_cache.report_at(
            run, tuple(active.thresholds[c] for c in run.classes), task
        )
        source = (
            f"{len(run.predictions)} {split} predictions at the “{active.name}” thresholds, "
            f"{BOOTSTRAP_AT_OTHER_THRESHOLDS} patient-level bootstrap resamples"
        )
        recomputed_with = active.name
elif report is None and has_predictions:
    report = evaluation_cache.report_at(
        run, tuple(DEFAULT_THRESHOLD for _ in run.classes) if multilabel else None, task
    )
    source = f"{len(run.predictions)} {split} predictions"
if report is None:
    st.warning("This evaluation run has neither a readable report.json nor predictions.csv.")
    st.stop()

clicks = st.session_state.get(gallery_view.CLICKS, 0)  # a new gallery clears every selection
st.caption(
    f"Numbers from {source}. 95% confidence intervals in brackets; "
    f"⚑ low-count classes (< {report.settings.min_positives} positives or negatives) are left "
    "out of macro averages."
    + (" Click a row, a count or a curve to see the films behind it." if has_predictions else "")
)
macro = report.macro
m1, m2, m3, m4 = st.columns(4)
m1.metric("Macro AUROC", fmt(macro.auroc))
m2.metric("Macro AP", fmt(macro.ap))
m3.metric("Cases", report.n_cases)
m4.metric("Low-count classes", len(macro.classes_excluded))

st.caption(threshold_source_note(run.report or report, recomputed_with))
tables = per_class_tables(report)
selectable = {"on_select": "ignore"}
# the class stays in view while a 1024 px screen scrolls to the other columns
PINNED_CLASS = {"class": st.column_config.TextColumn(pinned=True)}
st.markdown("**Discrimination and operating point** (95% CI)")
key = f"perf_table@{clicks}"
st.dataframe(
    tables["discrimination"],
    hide_index=True,
    key=key,
    height=table_height(len(tables["discrimination"])),
    column_config=PINNED_CLASS,
    **(
        dict(
            on_select=partial(gallery_view.open_from, key, "row", report),
            selection_mode="single-row",
        )
        if has_predictions
        else selectable
    ),
)
st.markdown(
    "**Predictive values and counts** "
    + ("at the same thresholds" if multilabel else "of the same calls")
    + (" · click a TP, FP, FN or TN count to see those films" if has_predictions else "")
)
key = f"perf_table_counts@{clicks}"
st.dataframe(
    tables["predictive"],
    hide_index=True,
    key=key,
    height=table_height(len(tables["predictive"])),
    column_config=PINNED_CLASS,
    **(
        dict(
            on_select=partial(gallery_view.open_from, key, "cell", report),
            selection_mode="single-cell",
        )
        if has_predictions
        else selectable
    ),
)
st.caption(
    "Averages over classes: macro is the unweighted mean over the classes not flagged; micro pools every decision."
)
st.dataframe(
    tables["averages"],
    hide_index=True,
    key="perf_table_averages",
    height=table_height(len(tables["averages"])),
)
st.download_button(
    "Download metrics (CSV)",
    frame_csv_text(metrics_table(report)),
    file_name=f"{entry.name}_{split}_metrics.csv",
    mime="text/csv",
    key="perf_csv",
    icon=":material/download:",
)
if macro.classes_excluded:
    st.caption("Left out of macro averages: " + ", ".join(macro.classes_excluded))

if report.multiclass is not None:
    mc = report.multiclass
    st.subheader("Confusion matrix")
    st.caption(
        f"Most probable class over {mc.n_cases} cases · accuracy {fmt(mc.accuracy)} · "
        f"balanced accuracy {fmt(mc.balanced_accuracy)}"
        + (" · click a cell to see its films" if has_predictions else "")
    )
    key = f"perf_confusion@{clicks}"
    st.plotly_chart(
        charts.confusion_figure(mc.confusion_matrix, report.class_names),
        key=key,
        on_select=partial(gallery_view.open_from, key, "confusion", list(report.class_names))
        if has_predictions
        else "ignore",
        selection_mode="points",
    )

st.subheader("ROC and precision-recall curves")
classes = list(report.class_names)
default = (
    classes if len(classes) <= 6 else [c for c in classes if not report.per_class[c].low_count][:5]
)
picked = st.multiselect("Classes", classes, default=default, key=f"perf_curve_classes@{entry.name}")
points, marked = {}, {}
if has_predictions and multilabel:
    marked = {c: active.thresholds[c] for c in run.classes}
    points = saved_runs.operating_points(run, [marked[c] for c in run.classes])
    st.caption(
        f"Markers: operating points at the active thresholds (“{active.name}”). Shaded: 95% "
        f"patient-level bootstrap band ({evaluation_cache.BANDS_RESAMPLES} resamples). Click a "
        "point to see the films that threshold gets wrong."
    )
bands = evaluation_cache.bands(run) if has_predictions else {}
curves = report.curves
prevalence = {c: e.n_pos / max(e.n_pos + e.n_neg, 1) for c, e in report.per_class.items()}
shown = [c for c in picked if c in curves]
left, right = st.columns(2)
for column, kind in ((left, "roc"), (right, "pr")):
    key = f"perf_{kind}@{clicks}"
    figure = (
        charts.roc_figure(
            {c: curves[c].roc for c in shown},
            {c: points[c][:2] for c in shown if c in points},
            bands=bands,
            labels=curve_legend(report, "auroc"),
            thresholds=marked,
        )
        if kind == "roc"
        else charts.pr_figure(
            {c: curves[c].pr for c in shown},
            {c: points[c][2:] for c in shown if c in points},
            {c: prevalence[c] for c in shown},
            bands=bands,
            labels=curve_legend(report, "ap"),
            thresholds=marked,
        )
    )
    column.plotly_chart(
        figure,
        key=key,
        on_select=partial(gallery_view.open_from, key, "curve") if has_predictions else "ignore",
        selection_mode="points",
    )

st.subheader("Calibration")
calibration = report.calibration
ece = {c: (e.ece if e.ece is not None else float("nan")) for c, e in calibration.items()}
left, right = st.columns([2, 1])
left.plotly_chart(
    charts.reliability_figure({c: calibration[c].bins for c in picked if c in calibration}, ece),
    key="perf_calibration",
)
right.dataframe(
    pd.DataFrame({"class": list(ece), "ECE": [fmt(v, 4) for v in ece.values()]}),
    hide_index=True,
    key="perf_ece",
    height=table_height(len(ece)),
)

if has_predictions:
    render_second_truth(entry, run, report, multilabel)

if run.report:
    with st.expander("Before / after temperature scaling"):
        render_calibration_change(run.report, picked)
    st.subheader("Subgroups")
    render_subgroups(run.report)

st.subheader("Training curves")
_training_section(entry)

with st.expander("Raw report (JSON)"):
    st.json({k: v for k, v in report.to_dict().items() if k != "curves"}, expanded=1)
    st.caption("Curve points are left out of the view above; the download holds the full report.")
    st.download_button(
        "Download report (JSON)",
        report.to_json(indent=2),
        file_name=f"{entry.name}_{split}_report.json",
        mime="application/json",
        key="perf_json",
        icon=":material/download:",
    )

if has_predictions:
    gallery_view.show_gallery(
        gallery_view.GalleryContext(
            entry,
            run,
            report,
            multilabel,
            dict(active.thresholds) if active else {},
            active.name if active else "argmax",
        )
    )
