"""Two models on the same images: per finding, what differs and whether chance explains it.

A comparison is of two *evaluation runs* (predictions with the calls their reports counted) on
the same images with the same labels; anything else is refused (:class:`NotPairedError`),
because two models scored on different patients, prevalences or label sources differ for
reasons that have nothing to do with the models. Per finding it reports both models' AUROC and
AP with the difference and its paired patient-level bootstrap interval, DeLong's test of the
AUROCs, and at each model's own operating point the sensitivity and specificity difference with
a paired interval and McNemar's test (:mod:`cxr_core.metrics.paired`). Differences are
``first - second``.

:func:`compare_checkpoints` (``cxr compare``) evaluates both checkpoints on one split of one
dataset and compares them; the dashboard compares two runs it already has
(:func:`compare_runs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.data.manifest import Manifest
from cxr_core.errors import NotPairedError
from cxr_core.evaluation.run import evaluate_checkpoint
from cxr_core.evaluation.saved_runs import run_decisions
from cxr_core.metrics import MIN_POSITIVES, to_jsonable
from cxr_core.metrics.paired import (
    MCNEMAR_EXACT_BELOW,
    delong_test,
    mcnemar_tests,
    paired_bootstrap,
)
from cxr_core.metrics.report_types import Interval, plain, record_from_dict
from cxr_core.utils.atomic import write_atomically, write_text_atomically
from cxr_core.utils.csv_safe import write_frame_csv

COMPARISON_FILE = "comparison.json"
TABLE_FILE = "comparison.csv"
_STATISTICS = ("auroc", "average_precision", "sensitivity", "specificity")


@dataclass(frozen=True)
class ScoredRun:
    """One model's evaluation of a split: its predictions and the calls its operating point made.

    ``decisions`` is (N, C) in ``classes`` order for the rows of ``predictions``;
    ``thresholds_from`` says where the operating point came from (as the report says).
    """

    name: str
    predictions: pd.DataFrame
    classes: tuple[str, ...]
    decisions: np.ndarray
    thresholds: dict[str, float | None]
    thresholds_from: str


def scored_run(name: str, run: EvalRun, multilabel: bool) -> ScoredRun:
    """A saved evaluation run with the calls its report counted (see :func:`run_decisions`)."""
    report = run.report
    thresholds = {c: (report.per_class[c].threshold if report else None) for c in run.classes}
    return ScoredRun(
        name,
        run.predictions,
        tuple(run.classes),
        run_decisions(run, multilabel),
        thresholds,
        report.thresholds_from if report else "",
    )


@dataclass
class ClassComparison:
    """One finding: both models' numbers, ``delta_*`` = first - second with its paired interval."""

    n_pos: int = 0
    n_neg: int = 0
    low_count: bool = False
    auroc_first: float | None = None
    auroc_second: float | None = None
    delta_auroc: float | None = None
    delta_auroc_ci: Interval | None = None
    delong_z: float | None = None
    delong_p: float | None = None
    delong_ci: Interval | None = None
    ap_first: float | None = None
    ap_second: float | None = None
    delta_ap: float | None = None
    delta_ap_ci: Interval | None = None
    threshold_first: float | None = None
    threshold_second: float | None = None
    sensitivity_first: float | None = None
    sensitivity_second: float | None = None
    delta_sensitivity: float | None = None
    delta_sensitivity_ci: Interval | None = None
    sensitivity_only_first: int = 0
    sensitivity_only_second: int = 0
    mcnemar_sensitivity_p: float | None = None
    mcnemar_sensitivity_test: str = ""
    specificity_first: float | None = None
    specificity_second: float | None = None
    delta_specificity: float | None = None
    delta_specificity_ci: Interval | None = None
    specificity_only_first: int = 0
    specificity_only_second: int = 0
    mcnemar_specificity_p: float | None = None
    mcnemar_specificity_test: str = ""


@dataclass
class ComparisonReport:
    """Two models compared finding by finding on the same images (see the module docstring)."""

    first: str
    second: str
    n_images: int
    n_patients: int
    per_class: dict[str, ClassComparison]
    operating_points: dict[str, str] = field(default_factory=dict)
    not_compared: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(plain(self), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> ComparisonReport:
        return record_from_dict(cls, data, "the comparison")


def _paired_frames(first: ScoredRun, second: ScoredRun) -> tuple[np.ndarray, list[str]]:
    """Row order of ``second`` matching ``first``'s images, and the classes both score; refuses
    runs that are not on the same images or label them differently."""
    ids_a = first.predictions["image_id"].astype(str).to_numpy()
    ids_b = second.predictions["image_id"].astype(str).to_numpy()
    if len(set(ids_a)) != len(ids_a) or set(ids_a) != set(ids_b):
        common = len(set(ids_a) & set(ids_b))
        raise NotPairedError(
            f"{first.name} was evaluated on {len(set(ids_a))} images and {second.name} on "
            f"{len(set(ids_b))}, {common} of them the same: a paired comparison needs both models "
            "scored on the same images (evaluate both on one split of one dataset, e.g. with "
            "`cxr compare --checkpoint A --checkpoint B`)"
        )
    order = pd.Series(np.arange(len(ids_b)), index=ids_b)[ids_a].to_numpy()
    classes = [c for c in first.classes if c in second.classes]
    if not classes:
        raise NotPairedError(f"{first.name} and {second.name} share no finding to compare")
    for c in classes:
        a = first.predictions[f"label:{c}"].to_numpy(dtype=float)
        b = second.predictions[f"label:{c}"].to_numpy(dtype=float)[order]
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        if differ.any():
            raise NotPairedError(
                f"the two runs label {int(differ.sum())} of the same images differently for {c}: "
                "they were scored against different label sources, so their numbers are not paired"
            )
    return order, classes


def _columns(run: ScoredRun, prefix: str, classes: Sequence[str], rows: np.ndarray) -> np.ndarray:
    return run.predictions[[f"{prefix}:{c}" for c in classes]].to_numpy(dtype=float)[rows]


def _decisions(run: ScoredRun, classes: Sequence[str], rows: np.ndarray) -> np.ndarray:
    return run.decisions[:, [run.classes.index(c) for c in classes]][rows]


def _class_rows(
    classes: list[str], labels: np.ndarray, boot: dict, delong, tests: list, runs: tuple
) -> dict[str, ClassComparison]:
    out = {}
    for c, name in enumerate(classes):
        n_pos, n_neg = int(np.sum(labels[:, c] == 1)), int(np.sum(labels[:, c] == 0))
        row: dict[str, Any] = {
            "n_pos": n_pos,
            "n_neg": n_neg,
            "low_count": min(n_pos, n_neg) < MIN_POSITIVES,
            "delong_z": delong.z[c],
            "delong_p": delong.p_value[c],
            "delong_ci": [delong.low[c], delong.high[c]],
            "threshold_first": runs[0].thresholds.get(name),
            "threshold_second": runs[1].thresholds.get(name),
        }
        for stat, key in zip(_STATISTICS, ("auroc", "ap", "sensitivity", "specificity")):
            d = boot[stat]
            row.update(
                {
                    f"{key}_first": d.first[c],
                    f"{key}_second": d.second[c],
                    f"delta_{key}": d.difference[c],
                    f"delta_{key}_ci": [d.low[c], d.high[c]],
                }
            )
        for key in ("sensitivity", "specificity"):
            test = tests[c][key]
            row[f"{key}_only_first"], row[f"{key}_only_second"] = test.only_first, test.only_second
            row[f"mcnemar_{key}_p"], row[f"mcnemar_{key}_test"] = test.p_value, test.method
        out[name] = record_from_dict(ClassComparison, to_jsonable(row), name)
    return out


def compare_runs(
    first: ScoredRun,
    second: ScoredRun,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> ComparisonReport:
    """Paired comparison of two runs on the same images (refused otherwise: :class:`NotPairedError`).

    The bootstrap resamples ``first``'s patients (``patient_id``), or images without them.
    """
    rows, classes = _paired_frames(first, second)
    every = np.arange(len(first.predictions))
    labels = _columns(first, "label", classes, every)
    scores = (_columns(first, "prob", classes, every), _columns(second, "prob", classes, rows))
    calls = (_decisions(first, classes, every), _decisions(second, classes, rows))
    groups = (
        first.predictions["patient_id"].astype(str).to_numpy()
        if "patient_id" in first.predictions
        else None
    )
    boot = paired_bootstrap(
        (labels, scores[0]),
        (labels, scores[1]),
        _STATISTICS,
        decisions=calls,
        groups=groups,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
    )
    per_class = _class_rows(
        classes,
        labels,
        boot,
        delong_test(labels, *scores, alpha=alpha),
        mcnemar_tests(labels, *calls),
        (first, second),
    )
    return ComparisonReport(
        first=first.name,
        second=second.name,
        n_images=len(labels),
        n_patients=len(set(groups.tolist())) if groups is not None else len(labels),
        per_class=per_class,
        operating_points={first.name: first.thresholds_from, second.name: second.thresholds_from},
        not_compared={
            first.name: [c for c in first.classes if c not in classes],
            second.name: [c for c in second.classes if c not in classes],
        },
        settings=_settings(n_boot, seed, alpha, groups is not None),
    )


def _settings(n_boot: int, seed: int, alpha: float, by_patient: bool) -> dict[str, Any]:
    return {
        "n_boot": int(n_boot),
        "seed": int(seed),
        "alpha": float(alpha),
        "bootstrap_unit": "patient" if by_patient else "image",
        "difference": "first minus second",
        "delong": "DeLong (1988), images treated as independent",
        "mcnemar": "on known positives (sensitivity) and known negatives (specificity); exact "
        f"binomial below {MCNEMAR_EXACT_BELOW} discordant images",
        "min_positives": MIN_POSITIVES,
    }


TABLE_COLUMNS = (
    ("n_pos", "positives"),
    ("auroc_first", "AUROC {first}"),
    ("auroc_second", "AUROC {second}"),
    ("delta_auroc", "ΔAUROC"),
    ("delta_auroc_ci", "ΔAUROC 95% CI"),
    ("delong_p", "DeLong p"),
    ("ap_first", "AP {first}"),
    ("ap_second", "AP {second}"),
    ("delta_ap", "ΔAP"),
    ("delta_ap_ci", "ΔAP 95% CI"),
    ("sensitivity_first", "sens {first}"),
    ("sensitivity_second", "sens {second}"),
    ("delta_sensitivity", "Δsens"),
    ("delta_sensitivity_ci", "Δsens 95% CI"),
    ("mcnemar_sensitivity_p", "McNemar p (sens)"),
    ("specificity_first", "spec {first}"),
    ("specificity_second", "spec {second}"),
    ("delta_specificity", "Δspec"),
    ("delta_specificity_ci", "Δspec 95% CI"),
    ("mcnemar_specificity_p", "McNemar p (spec)"),
    ("low_count", "low count"),
)


def _interval_text(ci: Interval | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"{ci[0]:+.3f} to {ci[1]:+.3f}"


def comparison_table(report: ComparisonReport) -> pd.DataFrame:
    """One numeric row per finding, titled with the model names; each interval as two columns
    (``… low``, ``… high``) so a spreadsheet can use them."""
    rows = []
    for name, entry in report.per_class.items():
        row: dict[str, Any] = {"finding": name}
        for key, title in TABLE_COLUMNS:
            value = getattr(entry, key)
            title = title.format(first=report.first, second=report.second)
            if key.endswith("_ci"):
                low, high = value or (None, None)
                row[f"{title} low"], row[f"{title} high"] = low, high
            else:
                row[title] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _num(value: float | None, pattern: str = "{:.3f}") -> str:
    return "–" if value is None else pattern.format(value)


def format_comparison(report: ComparisonReport) -> str:
    """Aligned plain-text table: per finding the AUROCs, each difference with its CI and p-value."""
    header = ["finding", "n+", "AUROC 1", "AUROC 2", "ΔAUROC [95% CI]", "DeLong p"]
    header += ["Δsens [95% CI]", "McNemar p", "Δspec [95% CI]", "McNemar p"]
    rows = [header]
    for name, e in report.per_class.items():
        rows.append(
            [
                name + (" *" if e.low_count else ""),
                str(e.n_pos),
                _num(e.auroc_first),
                _num(e.auroc_second),
                f"{_num(e.delta_auroc, '{:+.3f}')} [{_interval_text(e.delta_auroc_ci)}]",
                _num(e.delong_p, "{:.3g}"),
                f"{_num(e.delta_sensitivity, '{:+.3f}')} [{_interval_text(e.delta_sensitivity_ci)}]",
                _num(e.mcnemar_sensitivity_p, "{:.3g}"),
                f"{_num(e.delta_specificity, '{:+.3f}')} [{_interval_text(e.delta_specificity_ci)}]",
                _num(e.mcnemar_specificity_p, "{:.3g}"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    s = report.settings
    return "\n".join(
        [
            f"1 = {report.first}, 2 = {report.second}; Δ = 1 minus 2 on the same {report.n_images} images "
            f"({report.n_patients} patients); {round(100 * (1 - s.get('alpha', 0.05)))}% CIs from "
            f"{s.get('n_boot')} paired {s.get('bootstrap_unit')}-level bootstrap resamples",
            *lines,
            f"* fewer than {s.get('min_positives')} positives or negatives: read with care",
        ]
    )


def write_comparison(out_dir: Path, report: ComparisonReport) -> None:
    """``comparison.json`` (the report) and ``comparison.csv`` (its table, formula-safe)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / COMPARISON_FILE, report.to_json())
    table = comparison_table(report)
    write_atomically(out_dir / TABLE_FILE, lambda tmp: write_frame_csv(table, tmp))


def _names(checkpoints: Sequence[Path]) -> list[str]:
    names = [Path(c).parent.name or Path(c).stem for c in checkpoints]
    return names if names[0] != names[1] else [f"{names[0]} (1)", f"{names[1]} (2)"]


def compare_checkpoints(
    checkpoints: Sequence[str | Path],
    manifest: Manifest,
    split: str,
    out_dir: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cache_dir: str | Path = ".cxr_cache",
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    thresholds: str | None = None,
) -> ComparisonReport:
    """Evaluate two checkpoints on ``split`` of one ``manifest`` (each into ``out_dir/models/<name>``,
    as ``cxr evaluate`` would) and write their paired comparison to ``out_dir``."""
    if len(checkpoints) != 2:
        raise NotPairedError(f"a comparison takes two checkpoints, not {len(checkpoints)}")
    out_dir = Path(out_dir)
    runs = []
    for name, checkpoint in zip(_names([Path(c) for c in checkpoints]), checkpoints):
        folder = out_dir / "models" / name
        report = evaluate_checkpoint(
            checkpoint,
            manifest,
            split,
            folder,
            n_boot=n_boot,
            seed=seed,
            cache_dir=cache_dir,
            batch_size=batch_size,
            device=device,
            progress=progress,
            thresholds=thresholds,
        )
        frame, classes = load_predictions(folder / "predictions.csv")
        run = EvalRun(split, folder, tuple(classes), frame, report)
        runs.append(scored_run(name, run, report.multilabel))
    comparison = compare_runs(*runs, n_boot=n_boot, seed=seed)
    comparison.evaluation = {
        "checkpoints": [str(c) for c in checkpoints],
        "split": split,
        "source": manifest.source,
        "manifest_fingerprint_of_split": manifest.split(split).fingerprint(),
    }
    write_comparison(out_dir, comparison)
    return comparison


__all__ = [
    "COMPARISON_FILE",
    "ClassComparison",
    "ComparisonReport",
    "ScoredRun",
    "compare_checkpoints",
    "compare_runs",
    "comparison_table",
    "format_comparison",
    "scored_run",
    "write_comparison",
]
