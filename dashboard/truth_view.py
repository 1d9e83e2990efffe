"""The Performance page's "against another label source" section.

The same predictions and the same calls, scored against a second truth for the same images
(:mod:`cxr_core.evaluation.truth`): a review session's corrected labels (only the sessions whose
calls this reader may see) or a label file any dataset adapter reads (the NIH expert labels,
once their adapter is registered), with the dataset labels' numbers, the second truth's and the
change with its paired interval side by side.
"""

from __future__ import annotations

import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, EvalRun
from cxr_core.data.formats import AUTO, list_formats
from cxr_core.evaluation.gallery import open_sessions
from cxr_core.metrics import EvaluationReport
from dashboard import evaluation_cache, state
from dashboard.performance_tables import truth_display
from dashboard.tables import table_height
from dashboard.widgets import cxr_errors

NONE, SESSION, FILE = "dataset labels only", "a review session's corrected labels", "a label file"


def render_second_truth(
    entry: CheckpointEntry, run: EvalRun, report: EvaluationReport, multilabel: bool
) -> None:
    st.subheader("Against another label source")
    st.caption(
        "Dataset labels are often mined from reports. Score the same predictions and calls against "
        "another truth for the same images (joined by image id, findings by name): the change and its "
        "paired 95% CI show what the label noise does to each number."
    )
    store = state.review_store()
    sessions = open_sessions(
        store, str(entry.dir), run, viewer=state.reader(), multilabel=multilabel
    )
    source = st.radio("Second truth", (NONE, SESSION, FILE), horizontal=True, key="perf_truth")
    comparison = None
    with cxr_errors():
        if source == SESSION:
            if not sessions:
                st.info("No review session of this split whose calls you may see yet.")
                return
            names = {s.id: f"{s.name} (session {s.id})" for s in sessions}
            picked = st.selectbox(
                "Session", list(names), format_func=names.get, key="perf_truth_session"
            )
            comparison = evaluation_cache.truth_of_session(run, report, multilabel, store, picked)
        elif source == FILE:
            left, right = st.columns([3, 1])
            path = left.text_input("Label file or dataset folder", key="perf_truth_path")
            fmt = right.selectbox(
                "Format", (AUTO, *list_formats("labels")), key="perf_truth_format"
            )
            if path.strip():
                comparison = evaluation_cache.truth_of_file(
                    run, report, multilabel, path.strip(), fmt
                )
    if comparison is None:
        return
    st.caption(
        f"{comparison.alternate}: {comparison.matched_images} of {comparison.n_images} images labelled; "
        "change = second truth minus dataset labels, same resamples on both sides."
    )
    shown = truth_display(comparison)
    if shown.empty:
        st.info("The second truth shares no finding with these predictions.")
        return
    st.dataframe(shown, hide_index=True, key="perf_truth_table", height=table_height(len(shown)))
    st.download_button(
        "Download the comparison (JSON)",
        comparison.to_json(),
        file_name=f"{entry.name}_{run.split}_truth.json",
        mime="application/json",
        key="perf_truth_json",
        icon=":material/download:",
    )
