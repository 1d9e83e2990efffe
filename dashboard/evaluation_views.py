"""Presentation of a report's operating-point source, calibration change and subgroups.

The numbers are computed in :mod:`cxr_core.evaluation.run` (``thresholds_from``,
``calibration_change``, ``subgroups`` of ``report.json``); these functions only shape them
for the Performance page, so a reader sees next to every threshold metric where its
thresholds came from and which subgroup gaps are larger than chance.
"""

from __future__ import annotations

import pandas as pd

from cxr_core.metrics import EvaluationReport
from cxr_core.metrics.report_types import ReliabilityBins

SOURCE_TEXT = {
    "card": "the model card's thresholds (fitted on validation; out of sample on any other split)",
    "argmax": "no thresholds: the most probable class is called",
}
AS_EVALUATED = "as evaluated (report.json)"
AS_EVALUATED_CAPTION = "the report's own operating points: out of fold where they were cross-fitted"
RECOMPUTED_CAVEAT = (
    "in sample, so optimistic, on the cases the set was tuned on (the card's: the validation split)"
)


def threshold_table_options(active_name: str, has_report: bool) -> list[str]:
    """Where the operating-point table's thresholds may come from, the default first.

    The report's numbers come first whenever there is one: ``cxr evaluate`` cross-fits the
    operating points on the validation split (out of fold) and applies the card's on any other,
    while recomputing at the active set on the validation split scores the thresholds on the very
    cases they were tuned on, which flatters sensitivity, PPV and F1.
    """
    recomputed = f"active set “{active_name}” (recomputed)"
    return [AS_EVALUATED, recomputed] if has_report else [recomputed]


def threshold_table_captions(options: list[str]) -> list[str]:
    """One caption per :func:`threshold_table_options` entry: which numbers are out of sample."""
    return [AS_EVALUATED_CAPTION if o == AS_EVALUATED else RECOMPUTED_CAVEAT for o in options]


def threshold_source_note(report: EvaluationReport, recomputed_with: str | None = None) -> str:
    """One sentence saying where the thresholds behind sensitivity, specificity, PPV, NPV and F1 came from.

    ``recomputed_with`` names a saved set the page recomputed the table at (then in sample
    only if that set was tuned on these very cases, which the page cannot know).
    """
    if recomputed_with is not None:
        if recomputed_with == "card" and report.crossfitted:
            return (
                "Thresholds from: the model card, applied to the same cases they were fitted on — in sample, "
                "so sensitivity/PPV/F1 read optimistic; pick “as evaluated” for the out-of-fold numbers."
            )
        return (
            f"Thresholds from: the set “{recomputed_with}”, applied to these cases as is "
            "(in sample if the set was tuned on them)."
        )
    source = report.thresholds_from or ("argmax" if report.multiclass is not None else "")
    if not source:
        return "Thresholds from: not recorded (a report written before operating points were cross-fitted)."
    if ":crossfit-" in source:
        split, folds = source.split(":crossfit-")
        rule = report.threshold_rule or "the card's rule"
        return (
            f"Thresholds from: {source} — {rule} fitted on {int(folds) - 1} of {folds} patient folds of {split} "
            "and applied to the held-out fold, so sensitivity, specificity, PPV, NPV and F1 are out of sample; "
            "the threshold shown is the one fitted on all cases (the card's)."
        )
    if source.startswith("set:"):
        return f"Thresholds from: the saved set “{source[4:]}”."
    return f"Thresholds from: {SOURCE_TEXT.get(source, source)}."


def calibration_table(report: EvaluationReport) -> pd.DataFrame:
    """Per class and macro: ECE and Brier before and after temperature scaling, and the temperature."""
    change = report.calibration_change
    if change is None:
        return pd.DataFrame(
            columns=[
                "class",
                "temperature",
                "ECE before",
                "ECE after",
                "Brier before",
                "Brier after",
            ]
        )
    temps = change.temperature or []
    names = list(change.per_class)
    per_class_t = temps if len(temps) == len(names) else [temps[0] if temps else None] * len(names)
    rows = [
        {
            "class": n,
            "temperature": t,
            "ECE before": e.ece_before,
            "ECE after": e.ece_after,
            "Brier before": e.brier_before,
            "Brier after": e.brier_after,
        }
        for (n, e), t in zip(change.per_class.items(), per_class_t)
    ]
    macro = change.macro
    rows.append(
        {
            "class": "(macro average)",
            "temperature": None,
            "ECE before": macro.before.ece,
            "ECE after": macro.after.ece,
            "Brier before": macro.before.brier,
            "Brier after": macro.after.brier,
        }
    )
    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if c != "class"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame


def reliability_bins_of(report: EvaluationReport, when: str) -> dict[str, ReliabilityBins]:
    """Per class reliability bins ``before`` or ``after`` calibration (empty for older reports)."""
    change = report.calibration_change
    if change is None:
        return {}
    return {
        n: getattr(e, f"bins_{when}")
        for n, e in change.per_class.items()
        if getattr(e, f"bins_{when}") is not None
    }


def subgroup_table(report: EvaluationReport, key: str, statistic: str = "auroc") -> pd.DataFrame:
    """One row per subgroup and class: n, value with CI, gap to overall with CI, and the flag.

    Flagged: the gap's patient-level interval excludes zero. Sorted: flagged rows with enough
    positives and negatives first, then by the size of the gap, low-count rows last (a flag on
    a subgroup with one positive says little), so the rows worth a look come first.
    """
    section = report.subgroups.by.get(key) if report.subgroups else None
    columns = [
        "subgroup",
        "class",
        "n",
        "patients",
        "positives",
        statistic,
        f"{statistic} low",
        f"{statistic} high",
        "gap",
        "gap low",
        "gap high",
        "flagged",
        "low count",
    ]
    if not section:
        return pd.DataFrame(columns=columns)
    rows = []
    for value, group in section.subgroups.items():
        for name, e in group.per_class.items():
            ci = getattr(e, f"{statistic}_ci") or [None, None]
            gap_ci = getattr(e, f"{statistic}_gap_ci") or [None, None]
            rows.append(
                {
                    "subgroup": value,
                    "class": name,
                    "n": group.n,
                    "patients": group.n_patients,
                    "positives": e.n_pos,
                    statistic: getattr(e, statistic),
                    f"{statistic} low": ci[0],
                    f"{statistic} high": ci[1],
                    "gap": getattr(e, f"{statistic}_gap"),
                    "gap low": gap_ci[0],
                    "gap high": gap_ci[1],
                    "flagged": bool(getattr(e, f"{statistic}_gap_flag")),
                    "low count": bool(e.low_count),
                }
            )
    frame = pd.DataFrame(rows, columns=columns)
    numeric = [statistic, f"{statistic} low", f"{statistic} high", "gap", "gap low", "gap high"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    keys = pd.DataFrame(
        {
            "counted": ~frame["low count"],
            "real_flag": frame["flagged"] & ~frame["low count"],
            "size": frame["gap"].abs().fillna(-1),
        }
    )
    order = keys.sort_values(["real_flag", "counted", "size"], ascending=False, kind="stable").index
    return frame.loc[order].reset_index(drop=True)


def flagged_count(table: pd.DataFrame) -> tuple[int, int]:
    """(flagged gaps in subgroups with enough cases, flagged gaps in low-count ones) of a :func:`subgroup_table`."""
    flagged = table["flagged"].astype(bool)
    low = table["low count"].astype(bool)
    return int((flagged & ~low).sum()), int((flagged & low).sum())


def subgroup_note(report: EvaluationReport) -> str:
    """What the subgroup section covers, or why it is empty."""
    section = report.subgroups
    if section is None:
        return (
            "This report has no subgroup section (written before subgroup reporting); re-run "
            "`cxr evaluate --by ...`."
        )
    if not section.by:
        return section.note or "No subgroups were requested."
    return (
        "Gap = subgroup minus overall, with a paired patient-level bootstrap interval; ⚑ flagged when that interval "
        "excludes zero (no correction for the many comparisons: a prompt to look, not a verdict). "
        + section.note
    )
