from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_core.cli.main import main
from cxr_core.data.formats import list_formats, load_dataset
from cxr_core.data.inspect import format_summary, summarise
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.data.splits import assign_splits


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)
    return path


def _toy(tmp_path: Path) -> Manifest:
    paths = [str(_image(tmp_path / f"{i}.png")) for i in range(5)] + [str(tmp_path / "gone.png")]
    frame = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e", "f"],
            "path": paths,
            "patient_id": ["p1", "p1", "p2", "p3", "p3", "p3"],
            "view": ["PA", "PA", "AP", "", "", ""],
            "split": ["train", "val", "train", "test", "test", ""],
            "Mass": [1, 0, np.nan, 1, 0, 0],
            "Edema": [0, 0, 1, 0, 0, 1],
        }
    )
    return Manifest(frame, LabelSpace("toy", ("Mass", "Edema")), "toy source")


def test_summary_numbers(tmp_path: Path) -> None:
    s = summarise(_toy(tmp_path))
    assert (s["images"], s["patients"]) == (6, 3)
    assert s["splits"] == {
        "all": {"images": 6, "patients": 3},
        "train": {"images": 2, "patients": 2},
        "val": {"images": 1, "patients": 1},
        "test": {"images": 2, "patients": 1},
        "unassigned": {"images": 1, "patients": 1},
    }
    assert s["classes"]["Mass"]["all"] == {
        "positive": 2,
        "negative": 3,
        "unknown": 1,
        "prevalence": 0.4,
    }
    assert s["classes"]["Mass"]["train"] == {
        "positive": 1,
        "negative": 0,
        "unknown": 1,
        "prevalence": 1.0,
    }
    assert s["classes"]["Edema"]["test"]["prevalence"] == 0.0
    assert s["images_per_patient"] == {"min": 1, "median": 2.0, "max": 3}
    assert s["views"] == {"unknown": 3, "PA": 2, "AP": 1}
    assert s["missing_files"] == {
        "checked": True,
        "count": 1,
        "examples": [str(tmp_path / "gone.png")],
    }
    assert (
        s["leakage"]["patients_in_several_splits"] == 1
    )  # p1 train+val; p3's unassigned image is no split
    assert json.loads(json.dumps(s)) == s

    text = format_summary(s)
    assert (
        "Mass           1        0         1               0          2       40.0%        1"
        in text.splitlines()
    )
    assert "missing files: 1 (e.g. " in text
    assert "patient leakage: 1 patient(s) in several splits, e.g. p1 (train: 1, val: 1)" in text


def test_cli_proposes_split_for_class_folders(tmp_path: Path, capsys) -> None:
    for i in range(30):
        _image(tmp_path / "NORMAL" / f"IM-{i:04d}-0001.png")
        _image(tmp_path / "PNEUMONIA" / f"person{i}_bacteria_{i}.png")
    assert main(["data", "inspect", str(tmp_path), "--seed", "1", "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert (
        "60 images had no split; shown is the patient-level split that would be made (val 0.2, "
        "test 0, seed 1), not saved" in out
    )
    assert "patient leakage: none" in out and "missing files: none" in out

    assert (
        main(["data", "inspect", str(tmp_path), "--seed", "1", "--val-fraction", "0.2", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    expected = assign_splits(load_dataset(tmp_path), val=0.2, seed=1).frame["split"].value_counts()
    assert summary["splits"]["val"]["images"] == expected["val"] == 12
    assert summary["classes"]["Pneumonia"]["all"]["positive"] == 30


def test_cli_errors_are_messages(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["data", "inspect", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "Each format looks for:" in err and "--format NAME" in err
    for name in list_formats("labels"):  # every registered format says what it looks for
        assert f"\n  {name}: " in err

    nih = tmp_path / "nih"
    _image(nih / "images" / "a.png")
    (nih / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Patient ID\na.png,Mass,1\nb.png,Edema,2\n"
    )
    assert main(["data", "inspect", str(nih)]) == 2
    assert "1 of 2 images" in capsys.readouterr().err
    assert main(["data", "inspect", str(nih), "--missing", "drop"]) == 0
    assert "1 rows without an image file dropped" in capsys.readouterr().out


def test_cli_on_real_nih(nih14_root: Path, capsys) -> None:
    assert main(["data", "inspect", str(nih14_root), "--format", "nih"]) == 0
    out = capsys.readouterr().out
    assert "images:      2074   patients: 1455" in out
    hernia = next(line for line in out.splitlines() if line.startswith("Hernia"))
    assert hernia.split()[-2:] == ["40", "1.9%"]


@pytest.mark.parametrize("fmt", ["disease-folders", "chexpert"])
def test_cli_forced_format_mismatch(tmp_path: Path, fmt: str, capsys) -> None:
    _image(tmp_path / "NORMAL" / "a.png")
    assert main(["data", "inspect", str(tmp_path), "--format", fmt]) == 2
    assert "error:" in capsys.readouterr().err
