"""CSV files that are safe to open in a spreadsheet and read back row for row.

Predictions, reviews and manifests carry text taken from outside: file names, notes, patient
identifiers. Excel, LibreOffice and Google Sheets run a cell that starts with ``=``, ``+``,
``-`` or ``@`` as a formula (CSV injection), and also after a leading TAB or CR; a file
named ``=HYPERLINK("http://...")&".png"`` would otherwise become a live link in a report.
Following the OWASP rule, such cells get a leading apostrophe, which spreadsheets display as
text and do not evaluate.

One deliberate exception: a cell that is a plain decimal number (``-0.5``, ``+3``, ``-1e-3``)
is left alone. A number cannot carry a formula, and prefixing it would turn probability or
coordinate columns into text for every later reader (pandas, R, the spreadsheet itself).
Anything else starting with ``-`` or ``+`` (``-1+2``, ``+cmd|...``) is prefixed.

Rows are written with ``csv.QUOTE_MINIMAL`` and CRLF line endings: Python's csv module quotes
a field only for the characters of its line terminator, so with pandas' default ``"\\n"`` a
note containing a lone CR is written bare and read back as two rows.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import pandas as pd

FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
LINE_TERMINATOR = "\r\n"  # makes QUOTE_MINIMAL quote both CR and LF inside fields

_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def neutralise_cell(value: Any) -> Any:
    """``value`` with a leading ``'`` if a spreadsheet would run it as a formula.

    Only strings change; numbers and missing values are returned as they are, and so is a
    string that is a plain number (see the module docstring for why).
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_PREFIXES):
        return value
    if _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


class SafeCSVWriter:
    """``csv.writer`` whose rows are neutralised and quoted so that they read back as written.

    For writers that stream rows (and flush after each) instead of building a DataFrame.
    ``handle`` must be opened with ``newline=""``, as for any csv writer.
    """

    def __init__(self, handle: TextIO) -> None:
        self._writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator=LINE_TERMINATOR)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow([neutralise_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def write_csv_rows(
    path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Iterable[Any]]
) -> None:
    """Write ``header`` and ``rows`` to ``path`` (UTF-8) through :class:`SafeCSVWriter`."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = SafeCSVWriter(handle)
        writer.writerow(header)
        writer.writerows(rows)


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with text cells and column names neutralised; numeric columns untouched."""
    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]) and not pd.api.types.is_bool_dtype(
            out[column]
        ):
            out[column] = out[column].astype(object).map(neutralise_cell)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def write_frame_csv(
    frame: pd.DataFrame, path: str | os.PathLike[str] | TextIO, *, index: bool = False
) -> None:
    """``frame.to_csv`` with formula cells neutralised and CR/LF inside fields quoted."""
    neutralise_frame(frame).to_csv(
        path, index=index, quoting=csv.QUOTE_MINIMAL, lineterminator=LINE_TERMINATOR
    )


def _write_records(
    handle: TextIO, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    writer = SafeCSVWriter(handle)
    writer.writerow(columns)
    writer.writerows([row.get(c) for c in columns] for row in rows)


def write_records_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Dict rows as a formula-safe CSV file with ``columns`` in order (missing keys are empty cells)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="", encoding="utf-8") as handle:
        _write_records(handle, rows, columns)


def records_csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The same CSV as text, for a download button."""
    buffer = io.StringIO(newline="")
    _write_records(buffer, rows, columns)
    return buffer.getvalue()


def frame_csv_text(frame: pd.DataFrame, *, index: bool = False) -> str:
    """:func:`write_frame_csv` as text, for a download button."""
    buffer = io.StringIO(newline="")
    write_frame_csv(frame, buffer, index=index)
    return buffer.getvalue()
