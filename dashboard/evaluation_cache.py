"""Cached evaluation computations for the Performance and Models pages.

Each wrapper calls :mod:`cxr_core` once per input and keeps the result for every session of
the server (``st.cache_data``). Keys carry the run folder and its files' modification times,
so a re-evaluated run is recomputed; the run object itself is passed unhashed (``_run``).
"""

from __future__ import annotations

import streamlit as st

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.artifacts.run_dir import PREDICTIONS_FILE
from cxr_core.evaluation import saved_runs
from cxr_core.metrics import EvaluationReport


def run_key(run: EvalRun) -> str:
    """Identity of a run's predictions: folder and modification time of ``predictions.csv``."""
    path = run.dir / PREDICTIONS_FILE
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = 0.0
    return f"{run.dir}:{stamp}"


@st.cache_data(
    max_entries=16,
    show_spinner="Recomputing metrics and bootstrap intervals at the chosen thresholds…",
)
def _report_at(
    key: str, thresholds: tuple[float, ...] | None, task: str, _run: EvalRun
) -> EvaluationReport:
    return saved_runs.report_at_thresholds(_run, thresholds, task)


def report_at(run: EvalRun, thresholds: tuple[float, ...] | None, task: str) -> EvaluationReport:
    """:func:`cxr_core.evaluation.saved_runs.report_at_thresholds`, cached per run and thresholds."""
    return _report_at(run_key(run), thresholds, task, run)
