"""Formula-safe CSV writing: spreadsheet-active cells neutralised, CR/LF in fields read back as one row."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest

from cxr_core.utils.csv_safe import (
    SafeCSVWriter,
    neutralise_cell,
    read_table,
    restore_cell,
    write_frame_csv,
    write_table,
)


@pytest.mark.parametrize(
    "cell",
    [
        "=1+2.png",
        "+cmd|' /C calc'!A0",
        "-1+2",
        "@SUM(A1:A9)",
        "\tx.png",
        "\rx.png",
        "-",
        "+",
        "=",
        "-inf",
        "--5",
    ],
)
def test_formula_cells_get_an_apostrophe(cell):
    assert neutralise_cell(cell) == "'" + cell


@pytest.mark.parametrize(
    "cell",
    ["-0.5", "+3", "-1e-3", "0.25", "-.5", "12", "a.png", "", "note = fine", "'plain", "''"],
)
def test_plain_numbers_and_text_are_unchanged(cell):
    assert neutralise_cell(cell) == cell


@pytest.mark.parametrize("value", [-0.5, 3, None, True, float("nan")])
def test_non_strings_are_unchanged(value):
    assert neutralise_cell(value) is value


def test_written_csv_never_starts_a_cell_with_a_formula(tmp_path):
    path = tmp_path / "predictions.csv"
    write_table(
        path, ["path", "Effusion", "note"], [["=1+2.png", -0.5, "@note"], ["b.png", 0.25, "ok"]]
    )
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        ["path", "Effusion", "note"],
        ["'=1+2.png", "-0.5", "'@note"],
        ["b.png", "0.25", "ok"],
    ]
    frame = pd.read_csv(path)
    assert not frame["path"].str.startswith(("=", "+", "-", "@")).any()
    assert frame["Effusion"].dtype == np.float64 and frame["Effusion"].tolist() == [-0.5, 0.25]


def test_frame_with_cr_and_lf_in_notes_reads_back_row_for_row(tmp_path):
    frame = pd.DataFrame(
        {
            "path": ["=1+2.png", "a.png", "b.png", "c.png"],
            "probability": [0.9, -0.5, 0.1, 0.0],
            "note": ["line1\rline2", "line1\nline2", "line1\r\nline2", 'say "hi", then =go'],
        }
    )
    plain = io.StringIO()
    frame.to_csv(plain, index=False)
    assert len(pd.read_csv(io.StringIO(plain.getvalue()))) != len(frame)  # why the helper exists

    path = tmp_path / "review.csv"
    write_frame_csv(frame, path)
    back = pd.read_csv(path)
    assert len(back) == len(frame)
    assert back["path"].tolist() == ["'=1+2.png", "a.png", "b.png", "c.png"]
    assert back["note"].tolist() == frame["note"].tolist()
    assert back["probability"].tolist() == frame["probability"].tolist()


def test_streaming_writer_matches_the_row_helper(tmp_path):
    rows = [["=1+2.png", "0.5", "x\ry"], ["a.png", "-0.5", ""]]
    buffer = io.StringIO(newline="")
    writer = SafeCSVWriter(buffer)
    writer.writerow(["path", "p", "error"])
    writer.writerows(rows)
    write_table(tmp_path / "rows.csv", ["path", "p", "error"], rows)
    assert buffer.getvalue().encode("utf-8") == (tmp_path / "rows.csv").read_bytes()
    assert len(pd.read_csv(tmp_path / "rows.csv")) == 2


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1_NORMAL_4.jpeg",
        "=cmd|' /C calc'!A0",
        "'=already quoted",
        "''+x",
        "'",
        "'a",
        "-0.5",
        "-x",
        "@a",
    ],
)
def test_every_cell_reads_back_exactly(cell):
    assert restore_cell(neutralise_cell(cell)) == cell
    written = neutralise_cell(cell)
    assert not written.startswith(("=", "+", "@", "\t", "\r")) or written == "+3"
    assert not (written.startswith("-") and written != "-0.5")


def test_read_table_returns_what_was_written(tmp_path):
    frame = pd.DataFrame(
        {
            "=reader": ["=cmd|' /C calc'!A0", "'=quoted", "plain", None],
            "p": [0.1, -0.5, float("nan"), 1e-300],
            "n": [1, 2, 3, 4],
        }
    )
    path = write_frame_csv(frame, tmp_path / "t.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        raw = list(csv.reader(handle))
    assert (
        raw[0][0] == "'=reader" and raw[1][0] == "'=cmd|' /C calc'!A0" and raw[2][0] == "''=quoted"
    )
    back = read_table(path)
    assert list(back.columns) == ["=reader", "p", "n"]
    assert back["=reader"].tolist()[:3] == ["=cmd|' /C calc'!A0", "'=quoted", "plain"]
    assert (
        np.isnan(back["p"][2]) and back["p"].tolist()[:2] == [0.1, -0.5] and back["p"][3] == 1e-300
    )
    assert back["n"].dtype == np.int64
