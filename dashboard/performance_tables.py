"""The Performance page's tables and curve legends, shaped from an evaluation report.

Every number comes from the report (:mod:`cxr_core.metrics`); here it only becomes the text a
reader sees. No cell shows "None": an undefined number is "–", and a multiclass model, which
calls its most probable class, has no threshold or per-class accuracy columns at all.
"""

from __future__ import annotations

import pandas as pd

from cxr_core.evaluation.truth import TruthComparison
from cxr_core.metrics import EvaluationReport
from dashboard.tables import COUNTS, fmt, metrics_table, with_ci

DISCRIMINATION = ("auroc", "ap", "sensitivity", "specificity")
PREDICTIVE = ("ppv", "npv", "f1", "accuracy")
OUTCOME_COLUMNS = {"tp": "TP", "fp": "FP", "fn": "FN", "tn": "TN"}
"""Counts columns that open a gallery of their films when clicked, and the outcome each names."""


def _text(values: pd.Series) -> list[str]:
    return [fmt(v) for v in values]


def _count_text(values: pd.Series) -> list[str]:
    return ["–" if pd.isna(v) else str(int(v)) for v in values]


def per_class_tables(report: EvaluationReport) -> dict[str, pd.DataFrame]:
    """``discrimination`` (value (95% CI) per metric), ``predictive`` (PPV, NPV, F1, counts) and
    ``averages`` (macro, micro): text cells, one row per class in report order."""
    table = metrics_table(report)
    shown = with_ci(table)
    averages = table["class"].str.startswith("(")
    multilabel = report.multilabel
    head = ["class", "threshold"] if multilabel else ["class"]
    discrimination = shown.loc[~averages, [*head, *DISCRIMINATION]].copy()
    if multilabel:
        discrimination["threshold"] = _text(table.loc[~averages, "threshold"])
    discrimination["⚑ low count"] = ["⚑" if v else "" for v in table.loc[~averages, "low_count"]]
    plain = [m for m in PREDICTIVE if multilabel or m != "accuracy"]
    predictive = pd.DataFrame({"class": table.loc[~averages, "class"]})
    for metric in plain:
        predictive[metric] = _text(table.loc[~averages, metric])
    for count in COUNTS:
        predictive[OUTCOME_COLUMNS.get(count, count)] = _count_text(table.loc[~averages, count])
    summary = pd.DataFrame({"class": table.loc[averages, "class"]})
    for metric in (*DISCRIMINATION, *plain):
        summary[metric] = _text(table.loc[averages, metric])
    return {
        "discrimination": discrimination.reset_index(drop=True),
        "predictive": predictive.reset_index(drop=True),
        "averages": summary.reset_index(drop=True),
    }


def curve_legend(report: EvaluationReport, metric: str) -> dict[str, str]:
    """Legend text per class: ``"Edema · AUROC 0.812 (0.74–0.88)"`` (``metric`` "auroc" or "ap")."""
    title = {"auroc": "AUROC", "ap": "AP"}[metric]
    out = {}
    for name, entry in report.per_class.items():
        value, ci = getattr(entry, metric), getattr(entry, f"{metric}_ci")
        interval = f" ({fmt(ci[0], 2)}–{fmt(ci[1], 2)})" if ci and ci[0] is not None else ""
        out[name] = f"{name} · {title} {fmt(value)}{interval}"
    return out


TRUTH_METRICS = {
    "auroc": "AUROC",
    "ap": "AP",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
}


def truth_display(comparison: TruthComparison) -> pd.DataFrame:
    """Per finding and metric: images both truths label (and how many they disagree on), the value
    under each truth and the change with its paired 95% CI; "not enough films" where a side rests
    on too few films."""
    rows = []
    for name, e in comparison.per_class.items():
        for key, title in TRUTH_METRICS.items():
            ci = getattr(e, f"delta_{key}_ci")
            change = getattr(e, f"delta_{key}")
            rows.append(
                {
                    "Finding": name,
                    "Metric": title,
                    "Images (labels differ)": f"{e.n_images} ({e.n_disagree})",
                    "Dataset labels": _value(getattr(e, f"{key}_primary")),
                    comparison.alternate: _value(getattr(e, f"{key}_alternate")),
                    "Change (95% CI)": "–"
                    if change is None
                    else f"{change:+.3f} ({ci[0]:+.2f} to {ci[1]:+.2f})"
                    if ci and ci[0] is not None
                    else f"{change:+.3f}",
                }
            )
    return pd.DataFrame(rows)


def _value(value: float | None) -> str:
    return "not enough films" if value is None else f"{value:.3f}"
