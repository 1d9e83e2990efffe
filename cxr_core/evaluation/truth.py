"""One model's predictions scored against a second label source for the same images.

Dataset labels are often mined from reports and noisy. When another truth exists for some of
the same images (radiologist-adjudicated labels such as the NIH expert labels, or a review
session's adjudicated or majority calls), the numbers are worth seeing against both: the same
predictions and the same calls, scored once per truth, on the images both label, side by side
with the change and its paired patient-level interval (:func:`~cxr_core.metrics.paired.
paired_bootstrap`). The second truth arrives as a :class:`~cxr_core.data.manifest.Manifest`
(any dataset adapter) joined to the run by image id, classes matched by harmonised name
(``Effusion`` meets ``Pleural Effusion``), or as a review session's corrected labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.artifacts.catalog import EvalRun
from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.data.formats import load_dataset
from cxr_core.data.labels import match_classes
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.evaluation.review import corrected_labels, load_session, relabelled, session_frame
from cxr_core.evaluation.saved_runs import run_groups
from cxr_core.metrics import MIN_POSITIVES, EvaluationReport, to_jsonable
from cxr_core.metrics.confusion import decision_counts, metric_denominators
from cxr_core.metrics.paired import paired_bootstrap
from cxr_core.metrics.report_types import Interval, plain, record_from_dict
from cxr_core.utils.atomic import write_text_atomically

TRUTH_FILE = "truth.json"
_METRICS = {
    "auroc": "auroc",
    "ap": "average_precision",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
}
"""Report key -> bootstrap statistic of what is compared under both truths."""


@dataclass(frozen=True)
class AlternateLabels:
    """A second truth aligned to a run: (N, C) labels in the run's row and class order (NaN where
    it says nothing), what it is called, and which classes it covers."""

    labels: np.ndarray
    name: str
    classes: tuple[str, ...]
    matched_images: int


def labels_from_manifest(run: EvalRun, manifest: Manifest, name: str = "") -> AlternateLabels:
    """``manifest``'s labels for the run's images (joined by image id) and the classes both name."""
    mapping = match_classes(run.classes, manifest.classes, what=f"the run in {run.dir}")
    ids = run.predictions["image_id"].astype(str)
    frame = manifest.frame.set_index("image_id")
    matched = ids.isin(frame.index)
    if not matched.any():
        raise DatasetError(
            f"{manifest.source or 'the second label source'} labels none of the {len(ids)} images of "
            f"this run (joined by image id, e.g. {ids.iloc[0]}); is it about the same images?"
        )
    labels = np.full((len(ids), len(run.classes)), np.nan)
    for run_class, data_class in mapping.shared:
        column = frame[data_class].reindex(ids[matched]).to_numpy(dtype=float)
        labels[matched.to_numpy(), run.classes.index(run_class)] = column
    return AlternateLabels(
        labels, name or manifest.source, mapping.model_classes, int(matched.sum())
    )


def labels_from_file(run: EvalRun, path: str | Path, fmt: str = "auto") -> AlternateLabels:
    """A label file or dataset folder in any format the adapters read (``fmt``), joined to the run."""
    return labels_from_manifest(run, load_dataset(path, fmt=fmt), name=Path(path).name)


def labels_from_session(run: EvalRun, store: ReviewStore, session_id: int) -> AlternateLabels:
    """A review session's corrected labels (:func:`labels_from_review`) for the run's images."""
    data = load_session(store, session_id)
    corrected = corrected_labels(session_frame(store, data), store.adjudications(session_id))
    return labels_from_review(run, corrected, f"review session {session_id} ({data.session.name})")


def labels_from_review(run: EvalRun, corrected: pd.DataFrame, name: str) -> AlternateLabels:
    """A review session's corrected labels (adjudicated, else the readers' majority) for the
    films its readers called; every other film is unknown under this truth."""
    fixed, _ = relabelled(run, corrected)
    called = np.zeros(fixed.shape, dtype=bool)
    index = {i: r for r, i in enumerate(run.predictions["image_id"].astype(str))}
    for row in corrected.itertuples(index=False):
        if str(row.image_id) in index and row.class_name in run.classes:
            called[index[str(row.image_id)], run.classes.index(row.class_name)] = True
    classes = tuple(c for j, c in enumerate(run.classes) if called[:, j].any())
    return AlternateLabels(
        np.where(called, fixed, np.nan), name, classes, int(called.any(axis=1).sum())
    )


@dataclass
class TruthClassChange:
    """One finding on the images both truths label: each metric under the dataset labels
    (``*_primary``) and the second truth (``*_alternate``), the change (alternate - primary) with
    its paired interval; None where a side rests on fewer than ``min_positives`` films."""

    n_images: int = 0
    n_pos_primary: int = 0
    n_pos_alternate: int = 0
    n_disagree: int = 0
    auroc_primary: float | None = None
    auroc_alternate: float | None = None
    delta_auroc: float | None = None
    delta_auroc_ci: Interval | None = None
    ap_primary: float | None = None
    ap_alternate: float | None = None
    delta_ap: float | None = None
    delta_ap_ci: Interval | None = None
    sensitivity_primary: float | None = None
    sensitivity_alternate: float | None = None
    delta_sensitivity: float | None = None
    delta_sensitivity_ci: Interval | None = None
    specificity_primary: float | None = None
    specificity_alternate: float | None = None
    delta_specificity: float | None = None
    delta_specificity_ci: Interval | None = None


@dataclass
class TruthComparison:
    primary: str
    alternate: str
    n_images: int
    matched_images: int
    per_class: dict[str, TruthClassChange]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(plain(self), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict) -> TruthComparison:
        return record_from_dict(cls, data, "the truth comparison")


def _class_change(c: int, paired: dict, n: tuple[dict, dict], counts: dict) -> dict:
    row = dict(counts)
    for key, statistic in _METRICS.items():
        d = paired[statistic]
        enough = [side[key if key != "ap" else "auroc"][c] >= MIN_POSITIVES for side in n]
        row[f"{key}_alternate"] = d.first[c] if enough[0] else None
        row[f"{key}_primary"] = d.second[c] if enough[1] else None
        both = all(enough)
        row[f"delta_{key}"] = d.difference[c] if both else None
        row[f"delta_{key}_ci"] = [d.low[c], d.high[c]] if both else None
    return row


def compare_truths(
    run: EvalRun,
    alternate: AlternateLabels,
    decisions: np.ndarray,
    *,
    primary: str = "dataset labels",
    n_boot: int = 1000,
    seed: int = 0,
) -> TruthComparison:
    """The run's predictions and ``decisions`` (the report's calls) scored against both truths,
    per finding both cover, on the images both label."""
    scores = run.scores()
    both = ~np.isnan(run.labels()) & ~np.isnan(alternate.labels)
    first = np.where(both, run.labels(), np.nan)
    second = np.where(both, alternate.labels, np.nan)
    paired = paired_bootstrap(
        (second, scores),
        (first, scores),
        list(_METRICS.values()),
        decisions=(decisions, decisions),
        groups=run_groups(run),
        n_boot=n_boot,
        seed=seed,
    )
    n = tuple(metric_denominators(decision_counts(y, decisions)) for y in (second, first))
    per_class = {}
    for name in alternate.classes:
        c = run.classes.index(name)
        counts = {
            "n_images": int(both[:, c].sum()),
            "n_pos_primary": int(np.sum(first[:, c] == 1)),
            "n_pos_alternate": int(np.sum(second[:, c] == 1)),
            "n_disagree": int(np.sum(both[:, c] & (first[:, c] != second[:, c]))),
        }
        row = _class_change(c, paired, n, counts)
        per_class[name] = record_from_dict(TruthClassChange, to_jsonable(row), name)
    return TruthComparison(
        primary=primary,
        alternate=alternate.name,
        n_images=len(scores),
        matched_images=alternate.matched_images,
        per_class=per_class,
        settings={
            "n_boot": int(n_boot),
            "seed": int(seed),
            "bootstrap_unit": "patient" if run_groups(run) is not None else "image",
            "change": "second truth minus dataset labels, paired (same resamples)",
            "min_positives": MIN_POSITIVES,
            "calls": "the report's own operating point, identical under both truths",
        },
    )


def saved_run(out_dir: str | Path, split: str, report: EvaluationReport) -> EvalRun:
    """The evaluation just written to ``out_dir`` (``predictions.csv``) with its report."""
    frame, classes = load_predictions(Path(out_dir) / "predictions.csv")
    return EvalRun(split, Path(out_dir), tuple(classes), frame, report)


def write_truth_comparison(out_dir: str | Path, comparison: TruthComparison) -> Path:
    path = Path(out_dir) / TRUTH_FILE
    write_text_atomically(path, comparison.to_json())
    return path


def truth_table(comparison: TruthComparison) -> pd.DataFrame:
    """One row per finding and metric: under each truth, the change and its interval (numbers)."""
    rows = []
    for name, e in comparison.per_class.items():
        for key in _METRICS:
            ci = getattr(e, f"delta_{key}_ci") or [None, None]
            rows.append(
                {
                    "finding": name,
                    "metric": key,
                    "images": e.n_images,
                    "labels differ": e.n_disagree,
                    comparison.primary: getattr(e, f"{key}_primary"),
                    comparison.alternate: getattr(e, f"{key}_alternate"),
                    "change": getattr(e, f"delta_{key}"),
                    "change low": ci[0],
                    "change high": ci[1],
                }
            )
    return pd.DataFrame(rows)


def format_truth(comparison: TruthComparison) -> str:
    """Plain-text table: per finding and metric, the value under each truth and the change [CI]."""

    def num(v: float | None, pattern: str = "{:.3f}") -> str:
        return "not enough films" if v is None or pd.isna(v) else pattern.format(v)

    table = truth_table(comparison)
    lines = [
        f"{comparison.alternate} vs {comparison.primary}: {comparison.matched_images} of "
        f"{comparison.n_images} images labelled by both; change = second truth minus dataset labels "
        f"with a paired {comparison.settings.get('bootstrap_unit')}-level 95% CI"
    ]
    for row in table.to_dict("records"):
        interval = (
            f" [{row['change low']:+.3f}, {row['change high']:+.3f}]"
            if row["change low"] is not None and not pd.isna(row["change low"])
            else ""
        )
        lines.append(
            f"{row['finding']:<20} {row['metric']:<12} n={row['images']:<5} "
            f"{num(row[comparison.primary])} -> {num(row[comparison.alternate])}  "
            f"change {num(row['change'], '{:+.3f}')}{interval}"
        )
    return "\n".join(lines)


__all__ = [
    "TRUTH_FILE",
    "AlternateLabels",
    "TruthClassChange",
    "TruthComparison",
    "compare_truths",
    "format_truth",
    "labels_from_file",
    "labels_from_manifest",
    "labels_from_review",
    "labels_from_session",
    "saved_run",
    "truth_table",
    "write_truth_comparison",
]
