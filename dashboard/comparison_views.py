"""The Models page's paired comparison, shaped for reading: two tables of text and a forest plot's data.

Numbers come from :func:`cxr_core.evaluation.compare.compare_runs`; here they become "value
(95% CI)" text, p-values with three significant digits, "–" where there is nothing, "⚑" on
findings with too few positives or negatives.
"""

from __future__ import annotations

import pandas as pd

from cxr_core.evaluation.compare import ComparisonReport
from dashboard.tables import fmt


def _delta(value: float | None, ci: list | None) -> str:
    if value is None:
        return "–"
    interval = f" ({ci[0]:+.3f} to {ci[1]:+.3f})" if ci and ci[0] is not None else ""
    return f"{value:+.3f}{interval}"


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3g}"


def comparison_note(report: ComparisonReport, split: str) -> str:
    """What the comparison is: the images, the direction of Δ, the intervals and tests used."""
    sources = ", ".join(
        f"{name}: {source or 'not recorded'}" for name, source in report.operating_points.items()
    )
    return (
        f"Paired comparison on the same {report.n_images} {split} images ({report.n_patients} "
        f"patients): Δ = {report.first} minus {report.second}, 95% CIs from "
        f"{report.settings.get('n_boot')} paired {report.settings.get('bootstrap_unit')}-level "
        "bootstrap resamples; DeLong's test of the AUROCs (images treated as independent); "
        f"sensitivity and specificity at each model's own operating point ({sources}) with McNemar's "
        f"test. ⚑ fewer than {report.settings.get('min_positives')} positives or negatives."
    )


def discrimination_table(report: ComparisonReport) -> pd.DataFrame:
    """Per finding: AUROC and AP of both models, the differences with paired CIs, DeLong's p."""
    a, b = report.first, report.second
    rows = [
        {
            "Finding": name + (" ⚑" if e.low_count else ""),
            "Positives": e.n_pos,
            f"AUROC {a}": fmt(e.auroc_first),
            f"AUROC {b}": fmt(e.auroc_second),
            "ΔAUROC (95% CI)": _delta(e.delta_auroc, e.delta_auroc_ci),
            "DeLong p": _p(e.delong_p),
            f"AP {a}": fmt(e.ap_first),
            f"AP {b}": fmt(e.ap_second),
            "ΔAP (95% CI)": _delta(e.delta_ap, e.delta_ap_ci),
        }
        for name, e in report.per_class.items()
    ]
    return pd.DataFrame(rows)


def operating_table(report: ComparisonReport) -> pd.DataFrame:
    """Per finding at each model's own operating point: sensitivity and specificity of both, the
    differences with paired CIs, McNemar's p, and how many positives only one model got right
    (first / second)."""
    rows = [
        {
            "Finding": name + (" ⚑" if e.low_count else ""),
            "Sens.": f"{fmt(e.sensitivity_first)} vs {fmt(e.sensitivity_second)}",
            "ΔSens. (95% CI)": _delta(e.delta_sensitivity, e.delta_sensitivity_ci),
            "McNemar p (sens.)": _p(e.mcnemar_sensitivity_p),
            "Right by one only": f"{e.sensitivity_only_first} / {e.sensitivity_only_second}",
            "Spec.": f"{fmt(e.specificity_first)} vs {fmt(e.specificity_second)}",
            "ΔSpec. (95% CI)": _delta(e.delta_specificity, e.delta_specificity_ci),
            "McNemar p (spec.)": _p(e.mcnemar_specificity_p),
        }
        for name, e in report.per_class.items()
    ]
    return pd.DataFrame(rows)


def forest(report: ComparisonReport, metric: str = "auroc") -> dict[str, list]:
    """Findings with a defined difference: names, differences and interval ends, for the plot."""
    out: dict[str, list] = {"names": [], "delta": [], "low": [], "high": []}
    for name, e in report.per_class.items():
        delta, ci = getattr(e, f"delta_{metric}"), getattr(e, f"delta_{metric}_ci")
        if delta is None or not ci or ci[0] is None:
            continue
        out["names"].append(name + (" ⚑" if e.low_count else ""))
        out["delta"].append(delta)
        out["low"].append(ci[0])
        out["high"].append(ci[1])
    return out


def class_counts_display(counts: pd.DataFrame) -> pd.DataFrame:
    """A card's images per class as text: counts whole, AUROC to three decimals, "–" where the card
    does not say (no "None" cells), ⚑ on classes with too few validation positives or negatives."""
    shown = pd.DataFrame({"class": counts["class"]})
    for column in ("train_positives", "val_positives", "val_negatives"):
        shown[column] = ["–" if pd.isna(v) else str(int(v)) for v in counts[column]]
    shown["val_auroc"] = [fmt(v) for v in counts["val_auroc"]]
    shown["low_count"] = ["⚑" if flag else "" for flag in counts["low_count"]]
    return shown
