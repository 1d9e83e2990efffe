"""A report as an aligned plain-text table, for the command line and the logs."""

from __future__ import annotations

from cxr_core.metrics.report_types import ClassMetrics, EvaluationReport

HEADERS = (
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
)


def _fmt(value: object, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _fmt_ci(value: object, ci: object) -> str:
    if ci is None or ci[0] is None:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _class_row(name: str, e: ClassMetrics) -> list[str]:
    return [
        name + (" *" if e.low_count else ""),
        str(e.n_pos),
        str(e.n_neg),
        _fmt_ci(e.auroc, e.auroc_ci),
        _fmt(e.ap),
        _fmt(e.threshold),
        _fmt_ci(e.sensitivity, e.sensitivity_ci),
        _fmt_ci(e.specificity, e.specificity_ci),
        _fmt_ci(e.ppv, e.ppv_ci),
        _fmt_ci(e.npv, e.npv_ci),
        _fmt_ci(e.f1, e.f1_ci),
        _fmt(e.accuracy),  # at the class's threshold (seed 000 asks for it); "-" for multiclass
        _fmt_ci(e.brier, e.brier_ci),
    ]


def _average_rows(report: EvaluationReport) -> list[list[str]]:
    return [
        [label, "", "", _fmt(avg.auroc), _fmt(avg.ap), ""]
        + [_fmt(getattr(avg, m)) for m in ("sensitivity", "specificity", "ppv", "npv", "f1")]
        + [_fmt(getattr(avg, "accuracy", None)), _fmt(getattr(avg, "brier", None))]
        for label, avg in (("macro", report.macro), ("micro", report.micro))
    ]


def _table(report: EvaluationReport) -> list[str]:
    rows = [_class_row(name, e) for name, e in report.per_class.items()]
    averages = _average_rows(report)
    widths = [
        max(len(r[i]) for r in [list(HEADERS), *rows, *averages]) for i in range(len(HEADERS))
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        )

    rule = line(["-" * w for w in widths])
    return [line(list(HEADERS)), rule, *map(line, rows), rule, *map(line, averages)]


def _notes(report: EvaluationReport) -> list[str]:
    """Where thresholds came from, the calibration change and flagged subgroup gaps, when present."""
    out = []
    if report.thresholds_from:
        rule = f" ({report.threshold_rule})" if report.threshold_rule else ""
        out.append(
            f"thresholds from: {report.thresholds_from}{rule}"
            + ("; sens/spec/PPV/NPV/F1 are out of fold" if report.crossfitted else "")
        )
    change = report.calibration_change
    if change:
        before, after = change.macro.before, change.macro.after
        out.append(
            f"calibration ({change.method}, {change.source}): macro ECE {_fmt(before.ece)} -> "
            f"{_fmt(after.ece)}, macro Brier {_fmt(before.brier)} -> {_fmt(after.brier)}"
            + (
                f"; T = {', '.join(f'{t:.2f}' for t in change.temperature)}"
                if change.temperature
                else ""
            )
        )
    for key, sub in (report.subgroups.by if report.subgroups else {}).items():
        flags = [
            f"{value}: {cls} AUROC gap {_fmt_ci(e.auroc_gap, e.auroc_gap_ci)}"
            for value, group in sub.subgroups.items()
            for cls, e in group.per_class.items()
            if e.auroc_gap_flag and not e.low_count
        ]
        out.append(
            f"subgroups by {key}: {len(sub.subgroups)} groups; "
            + (
                f"AUROC gaps whose CI excludes 0: {'; '.join(flags)}"
                if flags
                else "no AUROC gap whose CI excludes 0"
            )
            + " (low-count subgroups not listed)"
        )
    if report.macro.classes_excluded:
        out.append(
            f"* low count, left out of macro averages ({report.macro.exclusion_rule}): "
            + ", ".join(report.macro.classes_excluded)
        )
    return out


def _confusion(report: EvaluationReport) -> list[str]:
    mc = report.multiclass
    if mc is None:
        return []
    names = report.class_names
    width = max(len(n) for n in [*names, "true \\ predicted"])
    cell = max(max(len(n) for n in names), max(len(str(v)) for r in mc.confusion_matrix for v in r))
    return [
        f"accuracy {_fmt(mc.accuracy)}, balanced accuracy {_fmt(mc.balanced_accuracy)} "
        f"({mc.prediction_rule} over {mc.n_cases} cases)",
        "true \\ predicted".ljust(width) + "  " + "  ".join(n.rjust(cell) for n in names),
        *(
            name.ljust(width) + "  " + "  ".join(str(v).rjust(cell) for v in counts)
            for name, counts in zip(names, mc.confusion_matrix)
        ),
    ]


def format_report(report: EvaluationReport) -> str:
    """Aligned plain-text table of a report, then its notes (thresholds' source, calibration,
    subgroup gaps, low-count classes) and, for a multiclass model, its confusion matrix."""
    s = report.settings
    confidence = round(100 * (1 - s.alpha))
    head = (
        f"{report.task} evaluation of {report.n_cases} cases; thresholds: {s.thresholds}; "
        f"{confidence}% CIs from {s.n_boot} {s.bootstrap_unit}-level bootstrap resamples (seed {s.seed})"
    )
    return "\n".join([head, *_table(report), *_notes(report), *_confusion(report)])
