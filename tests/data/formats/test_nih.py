from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cxr_core.data.formats import load_dataset, load_nih
from cxr_core.data.labels import NIH14
from cxr_core.errors import DatasetError

# Per-finding counts of the 2,074-image subset in ../shared/data/nih14 (shared data README).
SUBSET_COUNTS = {
    "Infiltration": 643,
    "Pleural Effusion": 581,
    "Atelectasis": 550,
    "Pneumonia": 539,
    "Mass": 319,
    "Nodule": 298,
    "Pneumothorax": 279,
    "Cardiomegaly": 277,
    "Consolidation": 260,
    "Edema": 236,
    "Pleural Thickening": 223,
    "Emphysema": 151,
    "Fibrosis": 123,
    "Hernia": 40,
}
# Published label statistics of the full ChestX-ray14 release (Wang et al. 2017, NIH release notes).
FULL_COUNTS = {
    "Infiltration": 19894,
    "Pleural Effusion": 13317,
    "Atelectasis": 11559,
    "Nodule": 6331,
    "Mass": 5782,
    "Pneumothorax": 5302,
    "Consolidation": 4667,
    "Pleural Thickening": 3385,
    "Cardiomegaly": 2776,
    "Emphysema": 2516,
    "Edema": 2303,
    "Fibrosis": 1686,
    "Pneumonia": 1431,
    "Hernia": 227,
}


def _counts(manifest) -> dict[str, int]:
    return {c: int(n) for c, n in zip(manifest.classes, manifest.labels().sum(axis=0))}


def test_real_subset_counts(nih14_root: Path) -> None:
    m = load_nih(nih14_root)
    assert len(m) == 2074
    assert m.label_space == NIH14
    assert _counts(m) == SUBSET_COUNTS
    assert int((m.labels().sum(axis=1) == 0).sum()) == 407  # "No Finding"
    assert m.frame["patient_id"].nunique() == 1455
    assert set(m.frame["split"]) == {""}  # train_val_list only: nothing is test
    assert set(m.frame["view"]) == {"PA", "AP"}
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in m.frame["path"].head(50))
    first = m.frame.iloc[0]
    assert (
        first["image_id"],
        first["patient_id"],
        first["sex"],
        first["age"],
        first["Hernia"],
    ) == ("00000003_001.png", "3", "F", 74, 1.0)


def test_full_csv_parses_to_published_counts(nih14_root: Path, labels_root: Path) -> None:
    m = load_nih(nih14_root, csv=labels_root / "Data_Entry_2017_v2020.csv.gz", check_files=False)
    assert len(m) == 112_120
    assert _counts(m) == FULL_COUNTS
    assert int((m.labels().sum(axis=1) == 0).sum()) == 60_361
    assert m.frame["patient_id"].nunique() == 30_805


def test_full_csv_with_image_subset(nih14_root: Path, labels_root: Path) -> None:
    csv = labels_root / "Data_Entry_2017_v2020.csv.gz"
    with pytest.raises(
        DatasetError,
        match=r"110046 of 112120 images .* not on disk: .*00000001_000\.png.*missing='drop'",
    ):
        load_nih(nih14_root, csv=csv)
    dropped = load_nih(nih14_root, csv=csv, missing="drop")
    assert len(dropped) == 2074
    assert "110046 rows without an image file dropped" in dropped.source
    local = load_nih(nih14_root)
    # The v2020 relabelling changed a few findings, so compare identity and patients, not labels.
    assert sorted(dropped.frame["image_id"]) == sorted(local.frame["image_id"])
    patients = local.frame.set_index("image_id")["patient_id"]
    assert dropped.frame.set_index("image_id")["patient_id"].equals(
        patients.reindex(dropped.frame["image_id"])
    )


def test_official_lists_layout_and_names(nih_dir) -> None:
    root = nih_dir(
        [
            "00000001_000.png,Effusion| Pleural_Thickening,0,1,058Y,M,PA",
            "00000001_001.png,No Finding,1,1,59,M,AP",
            "00000002_000.png,Hernia,0,2,40,F,pa",
        ],
        layout="official",
    )
    (root / "test_list.txt").write_text("00000002_000.png\n")
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n")
    m = load_nih(root)
    f = m.frame.set_index("image_id")
    assert list(f["split"]) == ["", "", "test"]
    assert (
        f.loc["00000001_000.png", "Pleural Effusion"] == 1.0
        and f.loc["00000001_000.png", "Pleural Thickening"] == 1.0
    )
    assert m.labels()[1].sum() == 0
    assert f.loc["00000001_000.png", "age"] == 58
    assert f.loc["00000002_000.png", "view"] == "PA"
    assert f.loc["00000001_001.png", "path"].endswith("images_002/images/00000001_001.png")
    assert load_dataset(root).fingerprint() == m.fingerprint()


def test_missing_column_lists_found_and_expected(nih_dir) -> None:
    root = nih_dir(
        ["a.png,Mass,0,1,40,F,PA"],
        header="Image Index,Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position",
    )
    with pytest.raises(
        DatasetError,
        match=r"lacks the column\(s\) \['Finding Labels'\].*found \['Image Index', 'Labels'",
    ):
        load_nih(root)


def test_unknown_finding_names_the_row(nih_dir) -> None:
    root = nih_dir(["a.png,Mass,0,1,40,F,PA", "b.png,Mass|Tumour,0,2,40,F,PA"])
    with pytest.raises(
        DatasetError, match=r"unknown finding label\(s\) \['Tumour'\] at row 3 \(b\.png\)"
    ):
        load_nih(root)


def test_duplicate_image_index(nih_dir) -> None:
    root = nih_dir(["a.png,Mass,0,1,40,F,PA", "b.png,Mass,0,2,40,F,PA"], images=False)
    (root / "Data_Entry_2017.csv").write_text(
        "\n".join(
            [
                "Image Index,Finding Labels,Patient ID",
                "a.png,Mass,1",
                "b.png,Edema,2",
                "a.png,Edema,1",
            ]
        )
        + "\n"
    )
    with pytest.raises(DatasetError, match=r"more than once at row 2 \(a\.png\), row 4 \(a\.png\)"):
        load_nih(root, check_files=False)


def test_blank_and_contradictory_findings(nih_dir) -> None:
    with pytest.raises(DatasetError, match=r"empty 'Finding Labels'.*row 3 \(b\.png\)"):
        load_nih(nih_dir(["a.png,Mass,0,1,40,F,PA", "b.png,,0,2,40,F,PA"]))
    with pytest.raises(
        DatasetError, match=r"'No Finding' listed together with findings at row 2 \(a\.png\)"
    ):
        load_nih(nih_dir(["a.png,No Finding|Mass,0,1,40,F,PA"]))


def test_missing_image_is_named(nih_dir) -> None:
    root = nih_dir(["a.png,Mass,0,1,40,F,PA", "b.png,Edema,0,2,40,F,PA"])
    (root / "images" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 of 2 images .* not on disk: .*images/b\.png"):
        load_nih(root)
    m = load_nih(root, missing="drop")
    assert (
        list(m.frame["image_id"]) == ["a.png"]
        and "1 rows without an image file dropped" in m.source
    )


def test_labels_only_without_images(nih_dir) -> None:
    root = nih_dir(["a.png,Mass,0,1,,,"], images=False)
    m = load_nih(root, check_files=False)
    assert m.frame.loc[0, "path"] == str((root / "images" / "a.png").resolve())
    assert math.isnan(m.frame.loc[0, "age"]) and np.array_equal(
        m.labels()[0], np.eye(14, dtype=np.float32)[NIH14.index("Mass")]
    )
    with pytest.raises(DatasetError, match="no image folder found"):
        load_nih(root)
