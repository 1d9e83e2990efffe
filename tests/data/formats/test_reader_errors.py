"""Broken label files (encoding, ragged rows, corrupt archives, no rows) are DatasetErrors naming file and row."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from cxr_core.data.formats import load_chexpert, load_dataset, load_nih
from cxr_core.data.formats.files import read_label_csv
from cxr_core.data.labels import CHEXPERT14
from cxr_core.errors import DatasetError

ROWS = [
    "00000001_000.png,No Finding,0,1,58,M,PA",
    "00000002_000.png,Hernia,0,2,81,F,PA",
    "00000003_000.png,Mass,0,3,30,F,AP",
]


def test_non_utf8_bytes_in_an_nih_row(nih_dir):
    root = nih_dir(ROWS)
    csv = root / "Data_Entry_2017.csv"
    csv.write_bytes(
        csv.read_bytes().replace(b"Hernia,0,2,81,F", "Hernia,0,2,81,F\xe9".encode("latin-1"))
    )
    with pytest.raises(
        DatasetError, match=r"Data_Entry_2017.csv: row 3 is not UTF-8 text \(byte 0xe9\)"
    ):
        load_nih(root)


def test_ragged_row_names_its_row(nih_dir):
    root = nih_dir([*ROWS[:2], "00000003_000.png,Mass,0,3,30,F,AP,extra,fields"])
    with pytest.raises(DatasetError, match="row 4 has 9 fields but the header has 7"):
        load_nih(root)


def test_header_only_csv(nih_dir):
    root = nih_dir([])
    with pytest.raises(DatasetError, match="has a header but no rows"):
        load_nih(root)
    (root / "Data_Entry_2017.csv").write_text("")
    with pytest.raises(DatasetError, match="is empty"):
        load_nih(root)


def _chexpert_csv(path, rows):
    header = ",".join(["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT14.classes])
    lines = [header] + [
        ",".join([r, "Male", "60", "Frontal", "PA", *(["1.0"] + [""] * 13)]) for r in rows
    ]
    return "\n".join(lines) + "\n"


def test_chexpert_encoding_and_corrupt_gzip(tmp_path):
    text = _chexpert_csv(
        tmp_path,
        [
            "CheXpert-v1.0/train/patient1/study1/view1_frontal.jpg",
            "CheXpert-v1.0/train/patient2/study1/view1_frontal.jpg",
        ],
    )
    csv = tmp_path / "train.csv"
    csv.write_bytes(text.encode().replace(b"patient2", b"patient\xff2"))
    with pytest.raises(DatasetError, match=r"CheXpert label file .*train.csv: row 3 is not UTF-8"):
        load_chexpert(csv, check_files=False)

    packed = tmp_path / "gz" / "train.csv.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(text.encode())[:60])  # truncated download
    with pytest.raises(DatasetError, match=r"train.csv.gz cannot be read .*corrupt or truncated"):
        load_chexpert(packed, check_files=False)
    packed.write_bytes(b"not gzip at all, just text")
    with pytest.raises(DatasetError, match="train.csv.gz cannot be read"):
        load_dataset(packed, fmt="chexpert")

    gz_bad_utf8 = tmp_path / "gz2" / "train.csv.gz"
    gz_bad_utf8.parent.mkdir()
    gz_bad_utf8.write_bytes(gzip.compress(text.encode().replace(b"patient2", b"patient\xff2")))
    with pytest.raises(DatasetError, match="row 3 is not UTF-8"):
        load_chexpert(gz_bad_utf8, check_files=False)


def test_reader_still_lets_callers_name_non_numeric_values(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(ValueError):
        read_label_csv(csv, "test file", dtype={"b": "float64"})
    pd.testing.assert_frame_equal(
        read_label_csv(csv, "test file", dtype=str), pd.read_csv(csv, dtype=str)
    )
