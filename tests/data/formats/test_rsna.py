"""RSNA Pneumonia: the real label file, its DICOM header table, images as DICOM, opacity boxes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_box_table, load_dataset
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_dicom

LABELS = "kaggle_stage_2_train_labels.csv.zip"


@pytest.fixture(scope="module")
def rows(labels_root):
    return pd.read_csv(labels_root / LABELS)


def test_every_row_of_the_real_file(labels_root, rows):
    assert detect_format(labels_root / LABELS)[0] == "rsna-pneumonia"
    manifest = load_dataset(labels_root / LABELS, check_files=False)
    assert len(manifest) == 26684 == rows["patientId"].nunique()
    positives = rows.groupby("patientId")["Target"].first().sum()
    assert (manifest.labels() == 1).sum(axis=0).tolist() == [positives, positives] == [6012, 6012]
    # views, ages and sexes from the DICOM header table beside the labels
    assert manifest.frame["view"].value_counts().to_dict() == {"PA": 14511, "AP": 12173}
    assert manifest.frame["sex"].isin(["M", "F"]).all() and manifest.frame["age"].notna().all()
    boxes = manifest.frame.set_index("image_id")["boxes"]
    assert boxes.sum() == rows["x"].notna().sum() and boxes.max() == 4


def _challenge_folder(root, rows, tmp_path):
    """The challenge layout for 6 real images (2 negative, 4 positive, one with 2 boxes), as DICOM."""
    positive = rows[rows["Target"] == 1]["patientId"]
    two = positive[positive.duplicated()].iloc[0]
    others = positive[positive != two].drop_duplicates().iloc[:3]
    chosen = [*rows[rows["Target"] == 0]["patientId"].iloc[:2], two, *others]
    folder = tmp_path / "rsna"
    folder.mkdir()
    rows[rows["patientId"].isin(chosen)].to_csv(folder / "stage_2_train_labels.csv", index=False)
    for i, pid in enumerate(chosen):
        write_dicom(
            folder / "stage_2_train_images" / f"{pid}.dcm",
            size=32,
            seed=i,
            ViewPosition="AP" if i % 2 else "PA",
            PatientAge=f"0{40 + i}Y",
            PatientSex="F",
        )
    return folder, two


def test_images_as_dicom_with_their_headers(labels_root, rows, tmp_path):
    folder, _ = _challenge_folder(labels_root, rows, tmp_path)
    manifest = load_dataset(folder)
    assert len(manifest) == 6 and manifest.frame["path"].str.endswith(".dcm").all()
    assert (
        set(manifest.frame["view"]) == {"PA", "AP"} and manifest.frame["age"].between(40, 45).all()
    )
    assert (manifest.labels()[:, 0] == 1).sum() == 4


def test_boxes_for_explain_eval(labels_root, rows, tmp_path):
    folder, two = _challenge_folder(labels_root, rows, tmp_path)
    table = load_box_table(folder)
    opacity = table[table["finding"] == "Lung Opacity"]
    source = rows[rows["patientId"].isin(table["image_id"]) & (rows["Target"] == 1)]
    assert len(opacity) == len(source) and (opacity["image_id"] == two).sum() == 2
    assert set(table["finding"]) == {"Lung Opacity", "Pneumonia"}  # every box once per class
    np.testing.assert_allclose(sorted(opacity["w"]), sorted(source["width"]))
    assert (table["width"] == 1024).all() and table["path"].str.endswith(".dcm").all()


def test_contradictory_rows_are_named(tmp_path):
    csv = tmp_path / "stage_2_train_labels.csv"
    csv.write_text("patientId,x,y,width,height,Target\nabc,10,10,5,5,0\n")
    with pytest.raises(
        DatasetError, match=r"Target must be 1 with a box or 0 without one.*row 2 \(abc\)"
    ):
        load_dataset(csv, check_files=False)
