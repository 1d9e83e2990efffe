"""Streamlit rendering of the subgroup and calibration-change sections (called once from the Performance page)."""

from __future__ import annotations

import streamlit as st

from cxr_core.metrics import EvaluationReport
from dashboard import charts
from dashboard.evaluation_views import (
    calibration_table,
    flagged_count,
    reliability_bins_of,
    subgroup_note,
    subgroup_table,
)


def render_calibration_change(report: EvaluationReport, picked: list[str]) -> None:
    """Reliability before and after temperature scaling side by side, and the ECE/Brier table."""
    table = calibration_table(report)
    if table.empty:
        st.caption(
            "This report predates calibration; re-run `cxr evaluate` for before/after temperature scaling."
        )
        return
    change = report.calibration_change
    st.caption(
        f"Temperature scaling ({change.method}); “after” from {change.source}"
        + (
            " (each case scaled by a temperature fitted on other patients)"
            if ":crossfit-" in change.source
            else ""
        )
        + ". The probabilities shown everywhere else are the calibrated ones."
    )
    ece = {r["class"]: r for r in table.to_dict("records")}
    left, right = st.columns(2)
    for column, when in ((left, "before"), (right, "after")):
        bins = {c: b for c, b in reliability_bins_of(report, when).items() if c in picked}
        column.markdown(f"**{when.capitalize()} calibration**")
        column.plotly_chart(
            charts.reliability_figure(bins, {c: ece[c][f"ECE {when}"] for c in bins}),
            key=f"perf_reliability_{when}",
        )
    st.dataframe(
        table,
        hide_index=True,
        key="perf_calibration_change",
        column_config={
            c: st.column_config.NumberColumn(format="%.4f") for c in table.columns if c != "class"
        },
    )


def render_subgroups(report: EvaluationReport) -> None:
    """Per-subgroup AUROC with CIs and gaps; flagged gaps first."""
    st.caption(subgroup_note(report))
    keys = list(report.subgroups.by) if report.subgroups else []
    if not keys:
        return
    key = st.radio("Subgroups by", keys, horizontal=True, key="perf_subgroup_key")
    table = subgroup_table(report, key)
    n_flagged, n_low = flagged_count(table)
    st.caption(
        f"{n_flagged} of {len(table)} subgroup × class AUROC gaps flagged"
        + (f" (plus {n_low} in low-count rows, listed last)." if n_low else ".")
    )
    st.dataframe(
        table,
        hide_index=True,
        key="perf_subgroups",
        column_config={
            "flagged": st.column_config.CheckboxColumn("⚑ gap CI excludes 0"),
            **{
                c: st.column_config.NumberColumn(format="%.3f")
                for c in ("auroc", "auroc low", "auroc high", "gap", "gap low", "gap high")
            },
        },
    )
