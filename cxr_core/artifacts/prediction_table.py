"""The one prediction table: written and read here for ``cxr predict``, the Predict page download
and evaluation's ``predictions.csv``.

One row per image, columns in this order::

    image_id, path, patient_id          which image (path empty for uploads)
    outcome, scored_anyway, reason      the input gate's verdict
    findings                            classes called positive ("; "-separated)
    label:<class>...                    the truth, where known (evaluation)
    prob:<class>...                     calibrated probabilities (empty when not scored)
    threshold:<class>...                the operating point of each call, where one was used
    warnings, error                     the gate's warnings (" | "-separated); why a file has no row
    <extra>...                          e.g. lung_fraction, model, checkpoint_sha256, threshold_set

``outcome`` is one of :data:`OUTCOMES` (the shared gate vocabulary): ``refused`` and
``unreadable`` rows carry no probabilities; an ``out_of_domain`` row carries probabilities but
no findings unless ``scored_anyway`` is true. Every table goes through
:mod:`cxr_core.utils.csv_safe` (formula-safe, read back exactly).

:func:`read_prediction_table` also reads the three formats the project wrote before this one:
``cxr predict``'s (``path, <class>..., findings, warnings[, lung_*], error``), the Predict
page's download (``file, model, checkpoint_sha256, threshold_set, positive, borderline,
prob:<class>..., threshold:<class>...``) and evaluation's (``image_id, patient_id, path,
label:<class>..., prob:<class>...``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from cxr_core.access.pseudonym import Pseudonymiser
from cxr_core.errors import DatasetError
from cxr_core.utils.atomic import write_atomically
from cxr_core.utils.csv_safe import read_table, table_text, write_table

LABEL_PREFIX = "label:"
PROB_PREFIX = "prob:"
THRESHOLD_PREFIX = "threshold:"
SCORED = "scored"
OUT_OF_DOMAIN = "out_of_domain"
REFUSED = "refused"
UNREADABLE = "unreadable"
OUTCOMES = (SCORED, OUT_OF_DOMAIN, REFUSED, UNREADABLE)
"""The gate's outcomes (what each allows: :mod:`cxr_core.inference.outcome`)."""
ID_COLUMNS = ("image_id", "path", "patient_id")
GATE_COLUMNS = ("outcome", "scored_anyway", "reason")
FINDINGS_SEPARATOR = "; "
_ROWS_AT_ONCE = 10_000  # frame rows turned into row objects at a time by frame_rows
WARNINGS_SEPARATOR = " | "


@dataclass
class PredictionRow:
    """One image of a prediction table (see the module docstring for the columns)."""

    image_id: str
    path: str = ""
    patient_id: str = ""
    outcome: str = "scored"
    scored_anyway: bool = False
    reason: str = ""
    findings: Sequence[str] = ()
    labels: Mapping[str, float] = field(default_factory=dict)
    probabilities: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float | None] = field(default_factory=dict)
    warnings: Sequence[str] = ()
    error: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {self.outcome!r}")


def table_columns(
    classes: Sequence[str], *, labels: bool, thresholds: bool, extra: Sequence[str] = ()
) -> list[str]:
    """The header of a table of ``classes``; labels and thresholds only where known."""
    return [
        *ID_COLUMNS,
        *GATE_COLUMNS,
        "findings",
        *([LABEL_PREFIX + c for c in classes] if labels else []),
        *(PROB_PREFIX + c for c in classes),
        *([THRESHOLD_PREFIX + c for c in classes] if thresholds else []),
        "warnings",
        "error",
        *extra,
    ]


def _record(row: PredictionRow, classes: Sequence[str]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "image_id": row.image_id,
        "path": row.path,
        "patient_id": row.patient_id,
        "outcome": row.outcome,
        "scored_anyway": "true" if row.scored_anyway else "false",
        "reason": row.reason,
        "findings": FINDINGS_SEPARATOR.join(row.findings),
        "warnings": WARNINGS_SEPARATOR.join(row.warnings),
        "error": row.error,
        **row.extra,
    }
    for c in classes:
        record[LABEL_PREFIX + c] = row.labels.get(c)
        record[PROB_PREFIX + c] = row.probabilities.get(c)
        record[THRESHOLD_PREFIX + c] = row.thresholds.get(c)
    return record


def _layout(
    rows: Iterable[PredictionRow],
    classes: Sequence[str],
    labels: bool | None,
    thresholds: bool | None,
    extra: Sequence[str] | None,
) -> tuple[list[str], Iterable[PredictionRow]]:
    """The header and the rows; the rows are read first only where the header depends on them."""
    if labels is None or thresholds is None or extra is None:
        rows = list(rows)
        labels = any(row.labels for row in rows) if labels is None else labels
        thresholds = any(row.thresholds for row in rows) if thresholds is None else thresholds
        if extra is None:
            extra = list(dict.fromkeys(k for row in rows for k in row.extra))
    header = table_columns(classes, labels=labels, thresholds=thresholds, extra=extra)
    return header, rows


def write_prediction_table(
    path: str | os.PathLike[str],
    classes: Sequence[str],
    rows: Iterable[PredictionRow],
    *,
    labels: bool | None = None,
    thresholds: bool | None = None,
    extra: Sequence[str] | None = None,
) -> Path:
    """Write ``rows`` as the prediction table at ``path`` (formula-safe, atomic).

    Given ``labels``, ``thresholds`` and ``extra`` (which columns the header has), the rows are
    written as they come, so a generator that predicts file after file never holds them all.
    """
    header, rows = _layout(rows, classes, labels, thresholds, extra)
    return write_table(path, header, (_record(r, classes) for r in rows))


def pseudonymised_rows(
    rows: Iterable[PredictionRow], pseudonymiser: Pseudonymiser
) -> list[PredictionRow]:
    """``rows`` with their image id, path and patient id replaced by this install's pseudonyms
    (the same film always gets the same one), for an export that leaves the server."""
    return [
        replace(
            row,
            image_id=pseudonymiser.pseudonym(row.image_id),
            path=pseudonymiser.pseudonym(row.path),
            patient_id=pseudonymiser.pseudonym(row.patient_id),
        )
        for row in rows
    ]


def merge_prediction_tables(
    path: str | os.PathLike[str], parts: Sequence[str | os.PathLike[str]]
) -> Path:
    """One table of the rows of ``parts`` in their order, each part a table written by
    :func:`write_prediction_table` with the same header (same classes and columns).

    The parts' rows are copied as written, byte for byte, streamed and atomically: a
    million-row table is never held in memory, and the result is the file one writer would
    have written. A part with another header is refused (a DatasetError naming it).
    """
    if not parts:
        raise DatasetError("no prediction tables to merge")
    header = _header_line(parts[0])

    def write(tmp: Path) -> None:
        with tmp.open("wb") as out:
            out.write(header)
            for part in parts:
                with open(part, "rb") as handle:
                    if handle.readline() != header:
                        raise DatasetError(
                            f"{part} has another header than {parts[0]}; only tables of the same "
                            "classes and columns can be merged"
                        )
                    shutil.copyfileobj(handle, out, 1 << 20)

    return write_atomically(Path(path), write)


def _header_line(path: str | os.PathLike[str]) -> bytes:
    with open(path, "rb") as handle:
        return handle.readline()


def prediction_table_text(classes: Sequence[str], rows: Iterable[PredictionRow]) -> str:
    """The same table as CSV text, for a download button."""
    header, rows = _layout(rows, classes, None, None, None)
    return table_text(header, (_record(r, classes) for r in rows))


def frame_rows(frame: pd.DataFrame, classes: Sequence[str]) -> Iterator[PredictionRow]:
    """Rows of a frame in the evaluation layout (``image_id``, ``patient_id``, ``path``,
    ``label:<class>``, ``prob:<class>`` and optionally ``threshold:<class>``): scored images.

    Yielded a slice of the frame at a time, so a million-row evaluation is written without
    a million row objects in memory.
    """
    for start in range(0, len(frame), _ROWS_AT_ONCE):
        for record in frame.iloc[start : start + _ROWS_AT_ONCE].to_dict("records"):
            yield PredictionRow(
                image_id=str(record["image_id"]),
                path=str(record.get("path", "")),
                patient_id=str(record.get("patient_id", "")),
                labels=_by_class(record, LABEL_PREFIX, classes),
                probabilities=_by_class(record, PROB_PREFIX, classes),
                thresholds=_by_class(record, THRESHOLD_PREFIX, classes),
            )


def frame_layout(frame: pd.DataFrame) -> dict[str, bool]:
    """Which optional column groups a frame in the evaluation layout has, as the ``labels`` and
    ``thresholds`` arguments of :func:`write_prediction_table` (so it can stream the rows)."""
    columns = [str(c) for c in frame.columns]
    return {
        "labels": any(c.startswith(LABEL_PREFIX) for c in columns),
        "thresholds": any(c.startswith(THRESHOLD_PREFIX) for c in columns),
    }


def _by_class(record: Mapping[str, Any], prefix: str, classes: Sequence[str]) -> dict[str, float]:
    return {c: record[prefix + c] for c in classes if prefix + c in record}


@dataclass
class PredictionTable:
    """A prediction table read back: the frame in the current layout and its classes."""

    frame: pd.DataFrame
    classes: list[str]
    source_format: str  # "cxr", or the old writer it came from

    def scored(self) -> pd.DataFrame:
        """Rows with probabilities (scored, or out of domain)."""
        return self.frame[self.frame["outcome"].isin(("scored", "out_of_domain"))]


def read_outcomes(source: str | os.PathLike[str]) -> pd.DataFrame:
    """Only the ``outcome`` and ``warnings`` columns of a table in the current format, as text:
    what a run's summary counts, read without typing a million rows of probabilities."""
    return read_table(source, usecols=["outcome", "warnings"], dtype=str, keep_default_na=False)


def read_prediction_table(source: str | os.PathLike[str] | TextIO) -> PredictionTable:
    """Read a prediction table of the current format or of one of the three older ones."""
    where = source if isinstance(source, (str, os.PathLike)) else "the predictions table"
    try:
        raw = read_table(source, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"predictions file {where} does not exist") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read predictions file {where}: {exc}") from None
    columns = list(raw.columns)
    if "outcome" in columns and "image_id" in columns:
        frame, fmt = raw, "cxr"
    elif "file" in columns and "positive" in columns:
        frame, fmt = _from_page_download(raw), "Predict page download (before 2026-12)"
    elif "image_id" in columns and any(c.startswith(PROB_PREFIX) for c in columns):
        frame, fmt = raw.assign(outcome="scored"), "evaluation predictions.csv (before 2026-12)"
    elif {"path", "findings", "error"} <= set(columns):
        frame, fmt = _from_old_cli(raw), "cxr predict (before 2026-12)"
    else:
        raise DatasetError(
            f"{where} is not a cxr prediction table: it has neither image_id/outcome nor prob:<class> columns"
        )
    classes = [c[len(PROB_PREFIX) :] for c in frame.columns if c.startswith(PROB_PREFIX)]
    if not classes:
        raise DatasetError(f"{where} is not a cxr prediction table: it has no prob:<class> columns")
    return PredictionTable(_typed(frame, where), classes, fmt)


def _from_page_download(raw: pd.DataFrame) -> pd.DataFrame:
    return raw.rename(columns={"file": "image_id", "positive": "findings"}).assign(outcome="scored")


def _from_old_cli(raw: pd.DataFrame) -> pd.DataFrame:
    """``path, <class>..., findings, warnings, [lung columns], error``: classes sit between."""
    columns = list(raw.columns)
    classes = columns[columns.index("path") + 1 : columns.index("findings")]
    frame = raw.rename(columns={c: PROB_PREFIX + c for c in classes})
    frame.insert(0, "image_id", [os.path.basename(p) for p in frame["path"]])
    frame["outcome"] = np.where(frame["error"].str.len() > 0, "unreadable", "scored")
    frame["reason"] = frame["error"]
    return frame


def _typed(frame: pd.DataFrame, where: object) -> pd.DataFrame:
    """Missing standard columns filled in, probabilities, labels and thresholds as floats
    (empty cells NaN), ``scored_anyway`` as bool; other columns stay text."""
    frame = frame.copy()
    for column in (*ID_COLUMNS, "reason", "findings", "warnings", "error"):
        if column not in frame.columns:
            frame[column] = ""
    if "scored_anyway" not in frame.columns:
        frame["scored_anyway"] = "false"
    frame["scored_anyway"] = frame["scored_anyway"].str.lower().isin(("true", "1", "yes"))
    for column in frame.columns:
        if column.startswith((PROB_PREFIX, LABEL_PREFIX, THRESHOLD_PREFIX)):
            frame[column] = _numbers(frame[column], column, where)
    return frame


def _numbers(values: pd.Series, column: str, where: object) -> pd.Series:
    numbers = pd.to_numeric(values.replace("", np.nan), errors="coerce")
    bad = numbers.isna() & (values != "")
    if bad.any():
        rows = ", ".join(str(i + 2) for i in np.flatnonzero(bad.to_numpy())[:5])
        raise DatasetError(
            f"{where}: column {column!r} holds text that is not a number in row(s) {rows} "
            f"(e.g. {values[bad].iloc[0]!r}); probabilities, labels and thresholds must be numbers"
        )
    return numbers
