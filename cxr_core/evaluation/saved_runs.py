"""Questions asked of a saved evaluation run (``predictions.csv`` + ``report.json``).

The dashboard shows a run as evaluated, but also at another threshold set, and needs the very
calls behind the report's counts (its galleries) or its curves' uncertainty. Each is computed
here, from the run's predictions, by the same :mod:`cxr_core.metrics` functions the evaluation
used, so a page only lays out what it gets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.errors import CheckpointError
from cxr_core.evaluation.operating import report_decisions
from cxr_core.metrics import (
    DEFAULT_THRESHOLD,
    EvaluationReport,
    SortedScores,
    argmax_decisions,
    evaluation_report,
)

BOOTSTRAP_AT_OTHER_THRESHOLDS = 200
"""Resamples for a report recomputed at other thresholds while a page waits (the saved report has its own)."""


def run_groups(run: EvalRun) -> np.ndarray | None:
    """Patient IDs per row (the bootstrap's unit), or None for a run without them (images resampled)."""
    if run.predictions is None or "patient_id" not in run.predictions:
        return None
    return run.predictions["patient_id"].astype(str).to_numpy()


def report_at_thresholds(
    run: EvalRun,
    thresholds: Sequence[float] | None,
    task: str,
    *,
    n_boot: int = BOOTSTRAP_AT_OTHER_THRESHOLDS,
    seed: int = 0,
) -> EvaluationReport:
    """The run's predictions scored at ``thresholds`` (one per class, run order; None for a
    multiclass model), with patient-level intervals from ``n_boot`` resamples."""
    return evaluation_report(
        run.labels(),
        run.scores(),
        list(run.classes),
        task,
        thresholds=None if thresholds is None else np.asarray(thresholds, dtype=np.float64),
        groups=run_groups(run),
        n_boot=n_boot,
        seed=seed,
    )


def run_decisions(
    run: EvalRun, multilabel: bool, report: EvaluationReport | None = None
) -> np.ndarray:
    """(N, C) positive calls in ``run.classes`` order: the ones ``report`` (default the run's own)
    counted; without a report, multilabel at the default threshold and multiclass the argmax."""
    report = report or run.report
    labels, scores = run.labels(), run.scores()
    if report is None:
        return scores >= DEFAULT_THRESHOLD if multilabel else argmax_decisions(scores)
    if list(report.class_names) != list(run.classes):
        raise CheckpointError(
            f"the report in {run.dir} is about {report.class_names}, its predictions about "
            f"{list(run.classes)}; re-run `cxr evaluate`"
        )
    groups = run_groups(run)
    if groups is None:
        groups = np.arange(len(labels)).astype(str)
    return report_decisions(report, labels, scores, groups)


def operating_points(
    run: EvalRun, thresholds: Sequence[float]
) -> dict[str, tuple[float, float, float, float]]:
    """Per class (FPR, TPR, recall, precision) at ``thresholds`` (run class order): where the
    curves' operating-point markers go."""
    metrics = SortedScores(run.labels(), run.scores()).metrics_at(
        np.asarray(thresholds, dtype=np.float64)
    )
    return {
        c: (
            1 - metrics["specificity"][i],
            metrics["sensitivity"][i],
            metrics["sensitivity"][i],
            metrics["ppv"][i],
        )
        for i, c in enumerate(run.classes)
    }
