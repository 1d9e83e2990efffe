"""Cached evaluation computations for the Performance and Models pages.

Each wrapper calls :mod:`cxr_core` once per input and keeps the result for every session of
the server (``st.cache_data``). Keys carry the run folder and its files' modification times,
so a re-evaluated run is recomputed; the run object itself is passed unhashed (``_run``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.artifacts.run_dir import PREDICTIONS_FILE
from cxr_core.evaluation import compare, saved_runs, truth
from cxr_core.evaluation.compare import ComparisonReport
from cxr_core.evaluation.truth import TruthComparison
from cxr_core.metrics import ClassBands, EvaluationReport, curve_bands


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


BANDS_RESAMPLES = 200
"""Resamples behind the curves' bands (the report's AUROC/AP intervals use the run's own count)."""


@st.cache_data(max_entries=16, show_spinner="Bootstrapping the curves' bands…")
def _bands(key: str, n_boot: int, _run: EvalRun) -> list[ClassBands]:
    return curve_bands(
        _run.labels(), _run.scores(), groups=saved_runs.run_groups(_run), n_boot=n_boot
    )


def bands(run: EvalRun) -> dict[str, ClassBands]:
    """Per class, the ROC and PR bootstrap bands of a run's predictions (patient-level)."""
    return dict(zip(run.classes, _bands(run_key(run), BANDS_RESAMPLES, run)))


@st.cache_data(max_entries=16, show_spinner=False)
def _decisions(key: str, report_key: str, multilabel: bool, _run: EvalRun, _report) -> np.ndarray:
    return saved_runs.run_decisions(_run, multilabel, _report)


def decisions(run: EvalRun, report: EvaluationReport | None, multilabel: bool) -> np.ndarray:
    """The calls behind ``report``'s counts (the run's own report, or one recomputed at a set)."""
    identity = (
        [
            report.thresholds_from,
            report.threshold_rule,
            report.settings.seed,
            [e.threshold for e in report.per_class.values()],
        ]
        if report is not None
        else []
    )
    return _decisions(run_key(run), json.dumps(identity), multilabel, run, report)


TRUTH_RESAMPLES = 500


@st.cache_data(max_entries=16, show_spinner="Scoring against the second truth…")
def _truth(
    key: str, source: tuple, primary: str, multilabel: bool, _run: EvalRun, _report, _labels
) -> TruthComparison:
    calls = decisions(_run, _report, multilabel)
    return truth.compare_truths(_run, _labels(), calls, primary=primary, n_boot=TRUTH_RESAMPLES)


def truth_of_file(
    run: EvalRun, report: EvaluationReport | None, multilabel: bool, path: str, fmt: str
) -> TruthComparison:
    """The run scored against a label file or dataset folder too (cached per file version)."""
    stamp = Path(path).stat().st_mtime if Path(path).exists() else 0.0
    return _truth(
        run_key(run),
        ("file", path, fmt, stamp),
        "dataset labels",
        multilabel,
        run,
        report,
        lambda: truth.labels_from_file(run, path, fmt),
    )


def truth_of_session(
    run: EvalRun,
    report: EvaluationReport | None,
    multilabel: bool,
    store: ReviewStore,
    session_id: int,
) -> TruthComparison:
    """The run scored against a review session's corrected labels too (recomputed as calls change)."""
    verdicts, decided = store.verdicts(session_id), store.adjudications(session_id)
    stamp = (
        len(verdicts),
        max((v.updated for v in verdicts), default=""),
        len(decided),
        max((a.updated for a in decided), default=""),
    )
    return _truth(
        run_key(run),
        ("session", session_id, stamp),
        "dataset labels",
        multilabel,
        run,
        report,
        lambda: truth.labels_from_session(run, store, session_id),
    )


COMPARISON_RESAMPLES = 1000


@st.cache_data(max_entries=8, show_spinner="Comparing the two models on the same images…")
def _comparison(keys: tuple, names: tuple, _runs: tuple, _multilabel: tuple) -> ComparisonReport:
    scored = [compare.scored_run(n, r, m) for n, r, m in zip(names, _runs, _multilabel)]
    return compare.compare_runs(*scored, n_boot=COMPARISON_RESAMPLES)


def comparison(
    names: tuple[str, str], runs: tuple[EvalRun, EvalRun], multilabel: tuple[bool, bool]
) -> ComparisonReport:
    """:func:`cxr_core.evaluation.compare.compare_runs` of two saved runs, cached per run version;
    raises :class:`~cxr_core.errors.NotPairedError` for runs not on the same images and labels."""
    return _comparison(tuple(run_key(r) for r in runs), names, runs, multilabel)
