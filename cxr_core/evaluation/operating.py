"""How an evaluation calls each case: the operating point behind its sensitivity, specificity and counts.

A report's operating-point metrics come from one of three rules: a multiclass model's argmax;
per-class thresholds (the card's, a saved set's, given ones); or a threshold rule cross-fitted
by patient on the split itself, where each case is judged by thresholds fitted on the other
patients' folds. :func:`operating_rule` makes that choice when a split is scored;
:func:`report_decisions` rebuilds the very per-case calls of a saved report (the cross-fit is
seeded and deterministic), so a gallery of a report's false positives, or a McNemar test of two
models at their operating points, uses exactly the calls the report counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxr_core.errors import DatasetError
from cxr_core.metrics import (
    DEFAULT_THRESHOLD,
    CrossFitThresholds,
    EvaluationReport,
    ThresholdSpec,
    argmax_decisions,
    crossfit_thresholds,
    parse_threshold_spec,
)
from cxr_core.models.card import ModelCard

ARGMAX = "argmax"
CROSSFIT_FOLDS = 5


@dataclass(frozen=True)
class OperatingRule:
    """``thresholds`` per class (None: argmax), where they came from, the rule, the cross-fit if any."""

    thresholds: list[float] | None
    source: str
    rule: str = ""
    fit: CrossFitThresholds | None = None

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """(N, C) positive calls: out of fold when cross-fitted (undecided cases False), argmax
        without thresholds, else ``prob >= threshold``."""
        if self.fit is not None:
            return self.fit.decisions
        if self.thresholds is None:
            return argmax_decisions(probs)
        return probs >= np.asarray(self.thresholds, dtype=np.float64)[None, :]


def n_folds_for(groups: np.ndarray) -> int:
    n_patients = len(set(groups.tolist()))
    if n_patients < 2:
        raise DatasetError(
            "out-of-sample operating points need at least 2 patients in the split; got "
            f"{n_patients}"
        )
    return min(CROSSFIT_FOLDS, n_patients)


def operating_rule(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    card: ModelCard,
    thresholds: dict[str, float] | ThresholdSpec | str | None,
    *,
    thresholds_from: str = "",
    split: str = "val",
    seed: int = 0,
    n_boot: int = 0,
) -> OperatingRule:
    """The rule :func:`cxr_core.evaluation.run.score_predictions` scores with (see its docstring)."""
    classes = list(card.classes)
    if not card.get_label_space().multilabel:
        return OperatingRule(None, ARGMAX)
    if isinstance(thresholds, (str, ThresholdSpec)):
        spec = parse_threshold_spec(thresholds)
        fit = crossfit_thresholds(
            labels,
            probs,
            groups,
            spec,
            n_folds=n_folds_for(groups),
            seed=seed,
            split=split,
            n_boot=n_boot,
        )
        vector = [float(t) if np.isfinite(t) else DEFAULT_THRESHOLD for t in fit.final_thresholds]
        return OperatingRule(vector, fit.source, str(spec), fit)
    chosen = card.thresholds if thresholds is None else thresholds
    vector = [float(chosen.get(c, DEFAULT_THRESHOLD)) for c in classes] if chosen else None
    source = thresholds_from or ("card" if thresholds is None else "given")
    return OperatingRule(vector, source, card.threshold_method if thresholds is None else "")


def report_decisions(
    report: EvaluationReport, labels: np.ndarray, probs: np.ndarray, groups: Sequence[str]
) -> np.ndarray:
    """(N, C) the calls behind a saved report's counts, for its predictions: the same rows, columns
    in ``report.class_names`` order (the cross-fit's folds depend on every class's labels).

    Multiclass: the argmax. Cross-fitted reports: the out-of-fold calls, rebuilt with the
    report's rule, folds and seed. Otherwise ``prob >= `` the report's per-class threshold.
    """
    if not report.multilabel:
        return argmax_decisions(probs)
    if report.crossfitted and report.threshold_rule:
        n_folds = report.operating_point.n_folds if report.operating_point else CROSSFIT_FOLDS
        return crossfit_thresholds(
            labels,
            probs,
            np.asarray(groups, dtype=object),
            report.threshold_rule,
            n_folds=n_folds,
            seed=report.settings.seed,
        ).decisions
    t = [report.per_class[c].threshold for c in report.class_names]
    t = np.array([DEFAULT_THRESHOLD if v is None else v for v in t], dtype=np.float64)
    return probs >= t[None, :]
