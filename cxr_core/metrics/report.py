"""One evaluation report: every number the dashboard and ``report.json`` show.

:func:`evaluation_report` computes it in parts (input checks, how cases are called, per-class
metrics, averages, calibration and curves) and returns the typed
:class:`~cxr_core.metrics.report_types.EvaluationReport`, whose JSON form is ``report.json``.

Multilabel classes are called positive at ``prob >= threshold``. A multiclass model calls one
class per case, its argmax, so its per-class rows are one-vs-rest of the argmax: the same
decisions as the confusion matrix (sensitivity = the matrix's recall), and accuracy is the one
figure ``trace / n`` (per-class one-vs-rest accuracies, which count every true negative of a
3-class problem, would read higher and are not reported).

Small classes make noisy numbers: a class with fewer than ``min_positives`` known positives
(or negatives) is flagged ``low_count`` and left out of the macro averages, and the report
lists which classes were left out so nobody reads a macro AUROC without knowing that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxr_core.metrics._inputs import MetricInputError, check_pair, class_thresholds
from cxr_core.metrics.bootstrap import AUROC, AVERAGE_PRECISION, BRIER, bootstrap_cis
from cxr_core.metrics.calibration import (
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from cxr_core.metrics.confusion import (
    METRIC_NAMES,
    argmax_decisions,
    balanced_accuracy,
    confusion_counts,
    confusion_matrix,
    decision_counts,
    threshold_metrics,
)
from cxr_core.metrics.ranking import curves, ranking_metrics
from cxr_core.metrics.report_types import EvaluationReport

DEFAULT_THRESHOLD = 0.5
MIN_POSITIVES = 10
"""Known positives (and negatives) a class needs before its metrics count: fewer are flagged low-count
and left out of macro averages (an AUROC over 9 positives moves by 0.1 with one film)."""
ARGMAX = "argmax"
CI_STATISTICS: tuple[str, ...] = (
    AUROC,
    AVERAGE_PRECISION,
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    BRIER,
)
_CI_KEYS = {
    AUROC: "auroc_ci",
    AVERAGE_PRECISION: "ap_ci",
    "sensitivity": "sensitivity_ci",
    "specificity": "specificity_ci",
    "ppv": "ppv_ci",
    "npv": "npv_ci",
    "f1": "f1_ci",
    BRIER: "brier_ci",
}
AVERAGED_METRICS: tuple[str, ...] = ("auroc", "ap") + METRIC_NAMES + (BRIER,)

logger = logging.getLogger(__name__)


def to_jsonable(value: object) -> object:
    """Plain Python containers and numbers; NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def _count(value: float) -> int | None:
    return None if math.isnan(value) else int(round(value))


def _check_multiclass(labels: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """Rows with a fully known label; raises if a known row is not exactly one class."""
    known = ~np.isnan(labels).any(axis=1)
    row_sums = labels[known].sum(axis=1)
    if np.any(row_sums != 1):
        bad = int(np.nonzero(known)[0][np.nonzero(row_sums != 1)[0][0]])
        raise MetricInputError(
            f"multiclass labels must mark exactly one of {', '.join(class_names)} per case; row {bad} "
            f"marks {int(labels[bad].sum())}. Use task='multilabel' if findings can co-occur."
        )
    return known


def _multiclass_section(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    known = _check_multiclass(labels, class_names)
    truth = np.argmax(labels[known], axis=1)
    predicted = np.argmax(probs[known], axis=1)
    n_classes = len(class_names)
    matrix = confusion_matrix(truth, predicted, n_classes)
    n_cases = int(known.sum())
    return {
        "prediction_rule": "argmax",
        "n_cases": n_cases,
        "n_unknown": int((~known).sum()),
        "confusion_matrix": matrix,
        "confusion_matrix_axes": "rows = true class, columns = predicted class, in class_names order",
        "accuracy": float(np.trace(matrix) / n_cases) if n_cases else float("nan"),
        "balanced_accuracy": balanced_accuracy(truth, predicted, n_classes),
    }


def _micro(labels: np.ndarray, probs: np.ndarray, counts: dict[str, np.ndarray]) -> dict:
    """Pooled over classes; classes with undefined (NaN) counts are left out."""
    known = ~np.isnan(labels)
    used = ~np.isnan(counts["tp"])
    defined = known & used[None, :]
    flat_auroc, flat_ap = (
        ranking_metrics(labels[known], probs[known]) if known.any() else ([np.nan], [np.nan])
    )
    pooled = threshold_metrics({name: np.sum(counts[name][used]) for name in counts})
    micro = {"auroc": flat_auroc[0], "ap": flat_ap[0]}
    micro.update({name: pooled[name] for name in METRIC_NAMES})
    micro.update({name: _count(float(pooled[name])) for name in ("tp", "fp", "tn", "fn")})
    micro["n_labels"] = int(defined.sum())
    return micro


@dataclass(frozen=True)
class _Decisions:
    """How the report calls a class positive: per-class thresholds (multilabel) or the argmax."""

    thresholds: np.ndarray
    counts: dict[str, np.ndarray]
    bootstrap_kwargs: dict[str, np.ndarray]
    described: str


def _decisions(
    labels: np.ndarray, probs: np.ndarray, thresholds: object, multiclass: bool
) -> _Decisions:
    if multiclass:
        if thresholds is not None:
            logger.warning(
                "thresholds do not apply to a multiclass model (it calls the argmax class); ignoring them"
            )
        called = argmax_decisions(probs)
        counts = decision_counts(labels, called)
        return _Decisions(np.full(labels.shape[1], np.nan), counts, {"decisions": called}, ARGMAX)
    t = class_thresholds(DEFAULT_THRESHOLD if thresholds is None else thresholds, labels.shape[1])
    described = "given" if thresholds is not None else f"default {DEFAULT_THRESHOLD}"
    return _Decisions(t, confusion_counts(labels, probs, t), {"thresholds": t}, described)


def _checked(
    y_true: object, y_prob: object, class_names: Sequence[str], task: str, settings: dict
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if task not in ("multilabel", "multiclass"):
        raise MetricInputError(f"task must be 'multilabel' or 'multiclass'; got {task!r}")
    labels, probs = check_pair(y_true, y_prob, what="y_prob")
    names = [str(name) for name in class_names]
    if len(names) != labels.shape[1]:
        raise MetricInputError(
            f"{len(names)} class names for {labels.shape[1]} label/probability columns; "
            "give one name per column, in column order"
        )
    if int(settings["min_positives"]) < 1:
        raise MetricInputError(f"min_positives must be at least 1; got {settings['min_positives']}")
    if int(settings["n_boot"]) < 0:
        raise MetricInputError(
            f"n_boot must be 0 (no intervals) or a positive number of resamples; got {settings['n_boot']}"
        )
    return labels, probs, names


def _per_class(
    labels: np.ndarray,
    probs: np.ndarray,
    names: list[str],
    decided: _Decisions,
    cis: dict,
    min_positives: int,
) -> dict[str, dict]:
    """Per class: ranking and operating-point metrics, counts, intervals and label counts."""
    auroc, ap = ranking_metrics(labels, probs)
    derived = threshold_metrics(decided.counts)
    brier = brier_score(labels, probs)
    n_pos, n_neg = np.sum(labels == 1, axis=0), np.sum(labels == 0, axis=0)
    multiclass = decided.described == ARGMAX
    out = {}
    for c, name in enumerate(names):
        entry = {
            "auroc": auroc[c],
            "ap": ap[c],
            "threshold": decided.thresholds[c],
            "brier": brier[c],
        }
        entry.update({metric: derived[metric][c] for metric in METRIC_NAMES})
        if multiclass:
            entry["accuracy"] = None  # one figure for the model: MulticlassSummary.accuracy
        entry.update({k: _count(float(derived[k][c])) for k in ("tp", "fp", "tn", "fn")})
        for stat, key in _CI_KEYS.items():
            entry[key] = [cis[stat].low[c], cis[stat].high[c]] if cis else None
        entry["bootstrap_resamples_used"] = (
            {stat: cis[stat].n_used[c] for stat in CI_STATISTICS} if cis else None
        )
        entry["n_pos"], entry["n_neg"] = int(n_pos[c]), int(n_neg[c])
        entry["n_unknown"] = int(labels.shape[0] - n_pos[c] - n_neg[c])
        entry["low_count"] = bool(n_pos[c] < min_positives or n_neg[c] < min_positives)
        out[name] = entry
    return out


def _macro(per_class: dict[str, dict], min_positives: int, multiclass: dict | None) -> dict:
    """Unweighted means over the classes that are not low-count, and which classes those are."""
    included = [name for name, e in per_class.items() if not e["low_count"]]
    macro: dict = {}
    for metric in AVERAGED_METRICS:
        values = np.array([per_class[name][metric] for name in included], dtype=np.float64)
        values = values[~np.isnan(values)]
        macro[metric] = float(values.mean()) if values.size else float("nan")
    if multiclass is not None:
        macro["accuracy"] = multiclass["accuracy"]
    macro["classes_included"] = included
    macro["classes_excluded"] = [name for name, e in per_class.items() if e["low_count"]]
    macro["exclusion_rule"] = (
        f"classes with fewer than {int(min_positives)} known positives or negatives"
    )
    return macro


def _calibration_and_curves(
    labels: np.ndarray, probs: np.ndarray, names: list[str], n_bins: int, max_points: int
) -> dict:
    ece = expected_calibration_error(labels, probs, n_bins=n_bins)
    bins = reliability_bins(labels, probs, n_bins=n_bins)
    brier = brier_score(labels, probs)
    class_curves = curves(labels, probs, max_points=max_points)
    return {
        "calibration": {
            name: {"ece": ece[c], "brier": brier[c], "bins": bins[c]}
            for c, name in enumerate(names)
        },
        "curves": {name: class_curves[c] for c, name in enumerate(names)},
    }


def evaluation_report(
    y_true: object,
    y_prob: object,
    class_names: Sequence[str],
    task: str,
    *,
    thresholds: object = None,
    groups: object = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_positives: int = MIN_POSITIVES,
    n_bins: int = 10,
    max_curve_points: int = 200,
    progress: bool = False,
) -> EvaluationReport:
    """Everything about one model on one split, as a typed :class:`EvaluationReport`.

    ``y_true``/``y_prob`` are (N, C) in ``class_names`` order (multiclass: one-hot labels and
    softmax probabilities). Multilabel ``thresholds`` default to 0.5 for every class;
    multiclass decisions are the argmax and take no thresholds (given ones are ignored, with a
    warning). ``groups`` (patient IDs) make the bootstrap resample patients; ``n_boot=0``
    skips intervals. Undefined numbers (NaN) are None, as in ``report.json``.
    """
    settings = {
        "n_boot": int(n_boot),
        "seed": int(seed),
        "alpha": float(alpha),
        "ci_method": "percentile bootstrap",
        "bootstrap_unit": "patient" if groups is not None else "image",
        "min_positives": int(min_positives),
        "n_bins": int(n_bins),
    }
    labels, probs, names = _checked(y_true, y_prob, class_names, task, settings)
    multiclass = _multiclass_section(labels, probs, names) if task == "multiclass" else None
    decided = _decisions(labels, probs, thresholds, multiclass is not None)
    cis = {}
    if n_boot > 0:
        cis = bootstrap_cis(
            labels,
            probs,
            CI_STATISTICS,
            **decided.bootstrap_kwargs,
            groups=groups,
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
            progress=progress,
        )
    per_class = _per_class(labels, probs, names, decided, cis, min_positives)
    micro = _micro(labels, probs, decided.counts)
    if multiclass is not None:
        micro["accuracy"] = multiclass["accuracy"]
    report = {
        "task": task,
        "class_names": names,
        "n_cases": int(labels.shape[0]),
        "settings": {"thresholds": decided.described, **settings},
        "per_class": per_class,
        "macro": _macro(per_class, min_positives, multiclass),
        "micro": micro,
        **_calibration_and_curves(labels, probs, names, n_bins, max_curve_points),
        "multiclass": multiclass,
    }
    return EvaluationReport.from_dict(to_jsonable(report))
