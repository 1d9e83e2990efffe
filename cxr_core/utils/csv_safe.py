"""The one way the project writes CSV files, and the matching reader for its own files.

Predictions, reviews, manifests and reports carry text taken from outside: file names, notes,
patient identifiers, reader names. Excel, LibreOffice and Google Sheets run a cell that starts
with ``=``, ``+``, ``-`` or ``@`` as a formula (CSV injection), and also after a leading TAB or
CR; a file named ``=HYPERLINK("http://...")&".png"`` would otherwise become a live link in a
report. Following the OWASP rule, such cells get a leading apostrophe, which spreadsheets
display as text and do not evaluate.

Two refinements make the file read back exactly as written (:func:`read_table`):

- a cell that is a plain decimal number (``-0.5``, ``+3``, ``-1e-3``) is left alone: a number
  cannot carry a formula, and prefixing it would turn probability columns into text for every
  later reader (pandas, R, the spreadsheet itself);
- a cell that already starts with apostrophes before a formula character (``'=x``) gets one
  more, so that the reader, which removes exactly one apostrophe from such cells, returns it
  unchanged. Any other cell is written as it is.

Rows are written with ``csv.QUOTE_MINIMAL`` and CRLF line endings: Python's csv module quotes a
field only for the characters of its line terminator, so with pandas' default ``"\\n"`` a note
containing a lone CR is written bare and read back as two rows. Missing values (``None``,
NaN) are empty cells; floats are written with ``repr`` (shortest exact form). Files are written
atomically (:mod:`cxr_core.utils.atomic`): a reader never sees half a table.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from cxr_core.utils.atomic import write_atomically

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
LINE_TERMINATOR = "\r\n"  # makes QUOTE_MINIMAL quote both CR and LF inside fields

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")

Row = Sequence[Any] | Mapping[str, Any]


def neutralise_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` if a spreadsheet would run it as a formula (or if it is
    such a cell already quoted, so that :func:`restore_cell` gives it back unchanged).

    Only strings change; numbers and missing values are returned as they are, and so is a
    string that is a plain number (see the module docstring for why).
    """
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(FORMULA_PREFIXES):
        return value if _PLAIN_NUMBER.fullmatch(value) else "'" + value
    if value[0] == "'" and _QUOTED_FORMULA.match(value):
        return "'" + value
    return value


def restore_cell(value: Any) -> Any:
    """The cell as it was before :func:`neutralise_cell` (one apostrophe removed before a
    formula character); anything else is returned unchanged."""
    if isinstance(value, str) and value[:1] == "'" and _QUOTED_FORMULA.match(value):
        return value[1:]
    return value


def _cell(value: Any) -> Any:
    """What the csv module is given: missing values as empty cells, numpy scalars as Python."""
    kind = type(value)  # the common cells first: a million-row table has tens of millions of them
    if kind is float:
        return "" if value != value else value  # NaN is the only value unequal to itself
    if kind is str:
        return neutralise_cell(value)
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return neutralise_cell(value)


class SafeCSVWriter:
    """``csv.writer`` whose rows are neutralised and quoted so that they read back as written:
    the one place this project turns rows into CSV text.

    For writers that stream rows (and flush after each); ``handle`` must be opened with
    ``newline=""``, as for any csv writer.
    """

    def __init__(self, handle: TextIO) -> None:
        self._writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator=LINE_TERMINATOR)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def _write(handle: TextIO, columns: Sequence[str], rows: Iterable[Row]) -> None:
    writer = SafeCSVWriter(handle)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c) for c in columns] if isinstance(row, Mapping) else row)


def write_table(path: str | os.PathLike[str], columns: Sequence[str], rows: Iterable[Row]) -> Path:
    """Write a header and rows (sequences in column order, or mappings with missing keys as
    empty cells) to ``path`` as a formula-safe UTF-8 CSV file, atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            _write(handle, columns, rows)

    return write_atomically(target, write)


def table_text(columns: Sequence[str], rows: Iterable[Row]) -> str:
    """The same CSV as text, for a download button."""
    buffer = io.StringIO(newline="")
    _write(buffer, columns, rows)
    return buffer.getvalue()


def _frame_rows(frame: pd.DataFrame, index: bool) -> tuple[list[str], Iterable[Row]]:
    columns = [str(c) for c in frame.columns]
    if not index:
        return columns, frame.itertuples(index=False, name=None)
    names = [str(n) if n is not None else "" for n in frame.index.names]
    return names + columns, (
        (*(key if isinstance(key, tuple) else (key,)), *values)
        for key, values in zip(frame.index, frame.itertuples(index=False, name=None))
    )


def write_frame_csv(
    frame: pd.DataFrame, path: str | os.PathLike[str], *, index: bool = False
) -> Path:
    """A DataFrame through :func:`write_table` (formula-safe, CR/LF quoted, atomic)."""
    return write_table(path, *_frame_rows(frame, index))


def frame_csv_text(frame: pd.DataFrame, *, index: bool = False) -> str:
    """:func:`write_frame_csv` as text, for a download button."""
    return table_text(*_frame_rows(frame, index))


def write_records_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> Path:
    """Dict rows as a formula-safe CSV file with ``columns`` in order (missing keys are empty cells)."""
    return write_table(path, columns, rows)


def records_csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """:func:`write_records_csv` as text, for a download button."""
    return table_text(columns, rows)


def read_table(source: str | os.PathLike[str] | TextIO, **read_csv_args: Any) -> pd.DataFrame:
    """A CSV this project wrote, read back as written: ``pd.read_csv`` (``read_csv_args``
    passed on), then the apostrophe :func:`neutralise_cell` added removed from text cells and
    column names. Files from elsewhere read the same way (their cells rarely start with ``'=``).
    """
    frame = pd.read_csv(source, **read_csv_args)
    frame.columns = [restore_cell(c) for c in frame.columns]
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].map(restore_cell)
    return frame
