"""Table shaping for the Performance, Models and Review pages: column titles, CI text, heights, dates.

``cxr_core`` returns data with plain keys (``train_positives``, ``auroc_ci``); the words a
reader sees as column titles, and how tall a table must be to show every row without a
scroll bar inside the page, are decided here.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime

import pandas as pd

from cxr_core.metrics import EvaluationReport

ROW_PX = 35
HEADER_PX = 38
"""Streamlit's dataframe row and header heights (default theme) in pixels."""

CI_METRICS = (
    ("auroc", "auroc_ci"),
    ("ap", "ap_ci"),
    ("sensitivity", "sensitivity_ci"),
    ("specificity", "specificity_ci"),
)
PLAIN_METRICS = ("ppv", "npv", "f1", "accuracy")
COUNTS = ("tp", "fp", "tn", "fn", "n_pos", "n_neg")

CLASS_COUNT_TITLES = {
    "class": "class",
    "train_positives": "train positives",
    "val_positives": "val positives",
    "val_negatives": "val negatives",
    "val_auroc": "val AUROC",
    "low_count": "⚑ low count",
}
MEMBER_TITLES = {
    "architecture": "architecture",
    "input_size": "input size",
    "epochs": "epochs",
    "best_epoch": "best epoch",
    "training_minutes": "training (min)",
    "val_macro_auroc": "val macro AUROC alone",
    "tta": "test-time augmentation",
    "checkpoint": "checkpoint",
}
OVERVIEW_TITLES = {
    "name": "name",
    "architecture": "architecture",
    "task": "task",
    "num_classes": "classes",
    "val_macro_auroc": "val macro AUROC",
    "eval_splits": "evaluated splits",
    "created": "created",
    "folder": "folder",
    "error": "error",
}


def table_height(rows: int) -> int:
    """Pixel height at which ``st.dataframe`` shows ``rows`` rows and its header with no inner scroll."""
    return HEADER_PX + ROW_PX * max(rows, 1) + 3


def fmt(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals; "–" for missing or NaN."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    return "–" if number != number else f"{number:.{digits}f}"


def metrics_table(report: EvaluationReport) -> pd.DataFrame:
    """One numeric row per class of an evaluation report (CI bounds as *_lo/*_hi), then macro and micro rows."""
    rows = []
    for name, e in report.per_class.items():
        row: dict = {"class": name, "threshold": e.threshold}
        for metric, ci_key in CI_METRICS:
            ci = getattr(e, ci_key) or [None, None]
            row |= {metric: getattr(e, metric), f"{metric}_lo": ci[0], f"{metric}_hi": ci[1]}
        row |= (
            {m: getattr(e, m) for m in PLAIN_METRICS}
            | {c: getattr(e, c) for c in COUNTS}
            | {"low_count": e.low_count}
        )
        rows.append(row)
    for label, avg in (("macro", report.macro), ("micro", report.micro)):
        rows.append(
            {
                "class": f"({label} average)",
                **{m: getattr(avg, m) for m, _ in CI_METRICS},
                **{m: getattr(avg, m) for m in PLAIN_METRICS},
            }
        )
    frame = pd.DataFrame(rows)
    numeric = [c for c in frame.columns if c not in ("class", "low_count")]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce")
    return frame.astype({"low_count": "boolean"})


def with_ci(frame: pd.DataFrame) -> pd.DataFrame:
    """The metrics table as shown: each CI metric as ``value (low–high)`` text."""
    shown = frame[["class", "threshold"]].copy()
    for metric, _ in CI_METRICS:
        shown[metric] = [
            fmt(v) + (f" ({fmt(lo)}–{fmt(hi)})" if lo is not None and not pd.isna(lo) else "")
            for v, lo, hi in zip(frame[metric], frame[f"{metric}_lo"], frame[f"{metric}_hi"])
        ]
    for col in (*PLAIN_METRICS, *COUNTS, "low_count"):
        shown[col] = frame[col]
    return shown


def titled(frame: pd.DataFrame, titles: Mapping[str, str]) -> pd.DataFrame:
    """``frame`` with its data keys renamed to the titles a reader sees (unknown keys kept)."""
    return frame.rename(columns=dict(titles))


def human_date(value: object) -> str:
    """``20240131``, ``2024-01-31T10:22:03+00:00`` or a date → ``31 Jan 2024`` (``, 10:22 UTC`` when timed)."""
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, (datetime, date)):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = (
                datetime.strptime(text, "%Y%m%d")
                if len(text) == 8 and text.isdigit()
                else datetime.fromisoformat(text)
            )
        except ValueError:
            return text
    if isinstance(parsed, datetime) and (parsed.hour, parsed.minute, parsed.second) != (0, 0, 0):
        offset = parsed.utcoffset()
        zone = " UTC" if offset is not None and offset.total_seconds() == 0 else ""
        return f"{parsed.day} {parsed:%b %Y, %H:%M}{zone}"
    return f"{parsed.day} {parsed:%b %Y}"


def key_values(record: Mapping, prefix: str = "") -> pd.DataFrame:
    """A nested model-card block as a two-column (field, value) table; lists are joined with commas."""
    rows: list[dict] = []

    def walk(value: object, name: str) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(inner, f"{name}.{key}" if name else str(key))
        elif isinstance(value, (list, tuple)) and all(
            not isinstance(v, (Mapping, list, tuple)) for v in value
        ):
            rows.append({"field": name, "value": ", ".join(str(v) for v in value)})
        elif isinstance(value, (list, tuple)):
            for i, inner in enumerate(value):
                walk(inner, f"{name}[{i}]")
        else:
            rows.append(
                {"field": name, "value": fmt(value) if isinstance(value, float) else str(value)}
            )

    walk(record, prefix)
    return pd.DataFrame(rows, columns=["field", "value"])
