"""PadChest: the real label file (term lists, physician vs RNN labels, pediatric flag, projections)."""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_dataset
from cxr_core.data.formats.padchest import PADCHEST_TERMS
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_image

PADCHEST = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"


@pytest.fixture(scope="module")
def raw(labels_root):
    columns = [
        "ImageID",
        "ImageDir",
        "StudyDate_DICOM",
        "PatientID",
        "PatientBirth",
        "PatientSex_DICOM",
    ]
    columns += ["Projection", "Pediatric", "MethodLabel", "Labels"]
    return pd.read_csv(labels_root / PADCHEST, dtype=str, usecols=columns)


@pytest.fixture(scope="module")
def manifest(labels_root):
    return load_dataset(labels_root / PADCHEST, check_files=False)


def test_every_row_of_the_real_file(labels_root, raw, manifest):
    assert detect_format(labels_root / PADCHEST)[0] == "padchest"
    assert len(manifest) == 160861 and manifest.frame["patient_id"].nunique() == 67625
    assert manifest.frame["view"].value_counts().to_dict() == {
        "PA": 91728,
        "LATERAL": 49579,
        "AP SUPINE": 14346,
        "AP": 4559,
        "COSTAL": 630,
        "EXCLUDE": 11,
        "": 8,
    }
    unlabelled = raw["Labels"].isna().to_numpy()
    assert manifest.frame.loc[unlabelled, list(manifest.classes)].isna().all().all()
    assert not manifest.frame.loc[~unlabelled, list(manifest.classes)].isna().any().any()


def test_terms_map_exactly_not_by_substring(raw, manifest):
    rng = np.random.default_rng(0)
    for i in rng.choice(np.flatnonzero(raw["Labels"].notna()), 300, replace=False):
        terms = {t.strip() for t in ast.literal_eval(raw["Labels"].iloc[i])}
        for cls, members in PADCHEST_TERMS.items():
            assert manifest.frame[cls].iloc[i] == float(bool(terms & set(members))), (i, cls)
    codes, lists = pd.factorize(raw["Labels"].fillna("[]"))
    only_pseudo = [
        "pseudonodule" in t and not t & {"nodule", "multiple nodules"}
        for t in ({x.strip() for x in ast.literal_eval(text)} for text in lists)
    ]
    pseudo = pd.Series(np.array(only_pseudo)[codes])
    assert pseudo.sum() > 1000 and (manifest.frame.loc[pseudo.to_numpy(), "Nodule"] == 0).all()
    assert int(manifest.frame["No Finding"].sum()) == 50616


def test_physician_or_rnn_labels_and_pediatric_images(raw, tmp_path):
    part = raw.iloc[::20]  # every 20th real row: all methods and some pediatric images
    part.to_csv(tmp_path / "labels.csv", index=False)
    physician = load_dataset(tmp_path / "labels.csv", labels="physician", check_files=False)
    assert len(physician) == int((part["MethodLabel"] == "Physician").sum()) > 1000
    assert set(physician.frame["label_method"]) == {"Physician"}
    rnn = load_dataset(tmp_path / "labels.csv", labels="rnn", pediatric=False, check_files=False)
    expected = (part["MethodLabel"] == "RNN_model") & (part["Pediatric"] != "PED")
    assert len(rnn) == int(expected.sum()) and not rnn.frame["pediatric"].any()
    assert load_dataset(tmp_path / "labels.csv", check_files=False).frame["pediatric"].any()
    with pytest.raises(DatasetError, match="labels must be one of all, physician, rnn"):
        load_dataset(tmp_path / "labels.csv", labels="doctor", check_files=False)


def test_images_in_their_image_dir_folders(labels_root, raw, tmp_path):
    subset = raw.iloc[:6]
    subset.to_csv(tmp_path / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv", index=False)
    for i, row in subset.iterrows():
        write_image(tmp_path / str(row["ImageDir"]) / row["ImageID"], seed=i)
    manifest = load_dataset(tmp_path)
    assert len(manifest) == 6 and manifest.frame["age"].between(0, 110).all()
    assert all(
        p.endswith(f"/{d}/{n}")
        for p, d, n in zip(manifest.frame["path"], subset["ImageDir"], subset["ImageID"])
    )
