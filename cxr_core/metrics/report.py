"""One evaluation report: every number the dashboard and ``report.json`` show, in plain JSON.

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

DEFAULT_THRESHOLD = 0.5
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
    min_positives: int = 10,
    n_bins: int = 10,
    max_curve_points: int = 200,
    progress: bool = False,
) -> dict:
    """Everything about one model on one split, JSON-serialisable (NaN becomes None).

    ``y_true``/``y_prob`` are (N, C) in ``class_names`` order (multiclass: one-hot labels and
    softmax probabilities). Multilabel ``thresholds`` default to 0.5 for every class;
    multiclass decisions are the argmax and take no thresholds (given ones are ignored, with a
    warning). ``groups`` (patient IDs) make the bootstrap resample patients; ``n_boot=0``
    skips intervals.
    """
    if task not in ("multilabel", "multiclass"):
        raise MetricInputError(f"task must be 'multilabel' or 'multiclass'; got {task!r}")
    labels, probs = check_pair(y_true, y_prob, what="y_prob")
    names = [str(name) for name in class_names]
    if len(names) != labels.shape[1]:
        raise MetricInputError(
            f"{len(names)} class names for {labels.shape[1]} label/probability columns; "
            "give one name per column, in column order"
        )
    if int(min_positives) < 1:
        raise MetricInputError(f"min_positives must be at least 1; got {min_positives}")
    if int(n_boot) < 0:
        raise MetricInputError(
            f"n_boot must be 0 (no intervals) or a positive number of resamples; got {n_boot}"
        )
    multiclass = _multiclass_section(labels, probs, names) if task == "multiclass" else None
    if multiclass is not None:
        if thresholds is not None:
            logger.warning(
                "thresholds do not apply to a multiclass model (it calls the argmax class); ignoring them"
            )
        t = np.full(len(names), np.nan)
        decisions = {"decisions": argmax_decisions(probs)}
        counts = decision_counts(labels, decisions["decisions"])
    else:
        t = class_thresholds(DEFAULT_THRESHOLD if thresholds is None else thresholds, len(names))
        decisions = {"thresholds": t}
        counts = confusion_counts(labels, probs, t)

    auroc, ap = ranking_metrics(labels, probs)
    derived = threshold_metrics(counts)
    brier = brier_score(labels, probs)
    cis = (
        bootstrap_cis(
            labels,
            probs,
            CI_STATISTICS,
            **decisions,
            groups=groups,
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
            progress=progress,
        )
        if n_boot > 0
        else {}
    )
    ece = expected_calibration_error(labels, probs, n_bins=n_bins)
    bins = reliability_bins(labels, probs, n_bins=n_bins)
    class_curves = curves(labels, probs, max_points=max_curve_points)
    n_pos = np.sum(labels == 1, axis=0)
    n_neg = np.sum(labels == 0, axis=0)
    low_count = (n_pos < min_positives) | (n_neg < min_positives)

    per_class = {}
    for c, name in enumerate(names):
        entry = {"auroc": auroc[c], "ap": ap[c], "threshold": t[c], "brier": brier[c]}
        entry.update({metric: derived[metric][c] for metric in METRIC_NAMES})
        if multiclass is not None:
            entry["accuracy"] = None  # one figure for the model: report["multiclass"]["accuracy"]
        entry.update({k: _count(float(derived[k][c])) for k in ("tp", "fp", "tn", "fn")})
        for stat, key in _CI_KEYS.items():
            entry[key] = [cis[stat].low[c], cis[stat].high[c]] if cis else None
        entry["bootstrap_resamples_used"] = (
            {stat: cis[stat].n_used[c] for stat in CI_STATISTICS} if cis else None
        )
        entry.update(
            {
                "n_pos": int(n_pos[c]),
                "n_neg": int(n_neg[c]),
                "n_unknown": int(labels.shape[0] - n_pos[c] - n_neg[c]),
                "low_count": bool(low_count[c]),
            }
        )
        per_class[name] = entry

    included = [name for c, name in enumerate(names) if not low_count[c]]
    macro: dict = {}
    for metric in AVERAGED_METRICS:
        values = np.array([per_class[name][metric] for name in included], dtype=np.float64)
        values = values[~np.isnan(values)]
        macro[metric] = float(values.mean()) if values.size else float("nan")
    if multiclass is not None:
        macro["accuracy"] = multiclass["accuracy"]
    macro["classes_included"] = included
    macro["classes_excluded"] = [name for c, name in enumerate(names) if low_count[c]]
    macro["exclusion_rule"] = (
        f"classes with fewer than {int(min_positives)} known positives or negatives"
    )

    micro = _micro(labels, probs, counts)
    if multiclass is not None:
        micro["accuracy"] = multiclass["accuracy"]
    report = {
        "task": task,
        "class_names": names,
        "n_cases": int(labels.shape[0]),
        "settings": {
            "thresholds": (
                ARGMAX
                if multiclass is not None
                else "given"
                if thresholds is not None
                else f"default {DEFAULT_THRESHOLD}"
            ),
            "n_boot": int(n_boot),
            "seed": int(seed),
            "alpha": float(alpha),
            "ci_method": "percentile bootstrap",
            "bootstrap_unit": "patient" if groups is not None else "image",
            "min_positives": int(min_positives),
            "n_bins": int(n_bins),
        },
        "per_class": per_class,
        "macro": macro,
        "micro": micro,
        "calibration": {
            name: {"ece": ece[c], "brier": brier[c], "bins": bins[c]}
            for c, name in enumerate(names)
        },
        "curves": {name: class_curves[c] for c, name in enumerate(names)},
    }
    if multiclass is not None:
        report["multiclass"] = multiclass
    return to_jsonable(report)


def _fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_ci(value: object, ci: object) -> str:
    if ci is None or ci[0] is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def format_report(report: dict) -> str:
    """Aligned plain-text table of a report (as returned by :func:`evaluation_report`).

    Also prints, when the report carries them (``cxr_core.evaluation.run`` adds them), where the
    thresholds came from, ECE/Brier before and after calibration and flagged subgroup gaps.
    """
    headers = [
        "class",
        "n_pos",
        "n_neg",
        "AUROC [CI]",
        "AP",
        "thr",
        "sens [CI]",
        "spec [CI]",
        "PPV [CI]",
        "NPV [CI]",
        "F1 [CI]",
        "acc",
        "Brier [CI]",
    ]
    rows = []
    for name, e in report["per_class"].items():
        rows.append(
            [
                name + (" *" if e["low_count"] else ""),
                str(e["n_pos"]),
                str(e["n_neg"]),
                _fmt_ci(e["auroc"], e["auroc_ci"]),
                _fmt(e["ap"]),
                _fmt(e["threshold"]),
                _fmt_ci(e["sensitivity"], e["sensitivity_ci"]),
                _fmt_ci(e["specificity"], e["specificity_ci"]),
                _fmt_ci(e["ppv"], e.get("ppv_ci")),
                _fmt_ci(e["npv"], e.get("npv_ci")),
                _fmt_ci(e["f1"], e.get("f1_ci")),
                _fmt(
                    e.get("accuracy")
                ),  # per class at its threshold ("-" for multiclass: see below)
                _fmt_ci(e.get("brier"), e.get("brier_ci")),
            ]
        )
    for label, avg in (("macro", report["macro"]), ("micro", report["micro"])):
        rows.append(
            [
                label,
                "",
                "",
                _fmt(avg["auroc"]),
                _fmt(avg["ap"]),
                "",
                _fmt(avg["sensitivity"]),
                _fmt(avg["specificity"]),
                _fmt(avg["ppv"]),
                _fmt(avg["npv"]),
                _fmt(avg["f1"]),
                _fmt(avg.get("accuracy")),
                _fmt(avg.get("brier")),
            ]
        )
    widths = [max(len(r[i]) for r in [headers] + rows) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        )

    settings = report["settings"]
    confidence = round(100 * (1 - settings["alpha"]))
    out = [
        f"{report['task']} evaluation of {report['n_cases']} cases; thresholds: {settings['thresholds']}; "
        f"{confidence}% CIs from {settings['n_boot']} {settings['bootstrap_unit']}-level bootstrap resamples "
        f"(seed {settings['seed']})",
        line(headers),
        line(["-" * w for w in widths]),
    ]
    out += [line(r) for r in rows[:-2]]
    out.append(line(["-" * w for w in widths]))
    out += [line(r) for r in rows[-2:]]
    if report.get("thresholds_from"):
        rule = f" ({report['threshold_rule']})" if report.get("threshold_rule") else ""
        out.append(
            f"thresholds from: {report['thresholds_from']}{rule}"
            + (
                "; sens/spec/PPV/NPV/F1 are out of fold"
                if ":crossfit-" in report["thresholds_from"]
                else ""
            )
        )
    change = report.get("calibration_change")
    if change:
        before, after = change["macro"]["before"], change["macro"]["after"]
        temps = change["temperature"]
        out.append(
            f"calibration ({change['method']}, {change['source']}): macro ECE {_fmt(before['ece'])} -> "
            f"{_fmt(after['ece'])}, macro Brier {_fmt(before['brier'])} -> {_fmt(after['brier'])}"
            + (f"; T = {', '.join(f'{t:.2f}' for t in temps)}" if temps else "")
        )
    for key, sub in (report.get("subgroups") or {}).get("by", {}).items():
        flags = [
            f"{value}: {cls} AUROC gap {_fmt_ci(e['auroc_gap'], e['auroc_gap_ci'])}"
            for value, group in sub["subgroups"].items()
            for cls, e in group["per_class"].items()
            if e["auroc_gap_flag"] and not e["low_count"]
        ]
        out.append(
            f"subgroups by {key}: {len(sub['subgroups'])} groups; "
            + (
                f"AUROC gaps whose CI excludes 0: {'; '.join(flags)}"
                if flags
                else "no AUROC gap whose CI excludes 0"
            )
            + " (low-count subgroups not listed)"
        )
    excluded = report["macro"]["classes_excluded"]
    if excluded:
        rule = report["macro"]["exclusion_rule"]
        out.append(f"* low count, left out of macro averages ({rule}): {', '.join(excluded)}")
    if "multiclass" in report:
        mc = report["multiclass"]
        out.append(
            f"accuracy {_fmt(mc['accuracy'])}, balanced accuracy {_fmt(mc['balanced_accuracy'])} "
            f"({mc['prediction_rule']} over {mc['n_cases']} cases)"
        )
        names = report["class_names"]
        width = max(len(n) for n in names + ["true \\ predicted"])
        cell = max(
            max(len(n) for n in names), max(len(str(v)) for r in mc["confusion_matrix"] for v in r)
        )
        out.append(
            "true \\ predicted".ljust(width) + "  " + "  ".join(n.rjust(cell) for n in names)
        )
        for name, counts in zip(names, mc["confusion_matrix"]):
            out.append(name.ljust(width) + "  " + "  ".join(str(v).rjust(cell) for v in counts))
    return "\n".join(out)
