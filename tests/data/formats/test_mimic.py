"""MIMIC-CXR-JPG: a fixture in the release's published layout (chexpert / negbio labels, metadata, split)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cxr_core.data.formats import detect_format, load_dataset
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_image

FIXTURE = Path(__file__).parent / "fixtures" / "mimic_cxr"


def test_studies_labels_reach_their_images_with_the_official_split():
    manifest = load_dataset(FIXTURE, check_files=False)  # U-Ones, blank = 0: the CheXpert defaults
    frame = manifest.frame.set_index("image_id")
    assert detect_format(FIXTURE) == ("mimic-cxr", FIXTURE)
    assert len(manifest) == 7 and frame["patient_id"].nunique() == 3
    assert frame["split"].value_counts().to_dict() == {"train": 4, "val": 2, "test": 1}
    study = frame[frame["study_id"] == "53189527"].iloc[0]
    assert (study["Cardiomegaly"], study["Edema"], study["Pleural Effusion"]) == (1.0, 1.0, 0.0)
    lateral = frame[frame["view"] == "LATERAL"].iloc[0]
    assert lateral["No Finding"] == 1.0 and lateral["Atelectasis"] == 0.0  # blank -> 0
    unlabelled = frame[frame["study_id"] == "50771383"]
    assert unlabelled[list(manifest.classes)].isna().all(axis=None)
    assert frame.loc["0a000001-00000001-00000001-00000001-00000001", "path"].endswith(
        "files/p10/p10000032/s50414267/0a000001-00000001-00000001-00000001-00000001.jpg"
    )


def _study(manifest, study: str):
    return manifest.frame[manifest.frame["study_id"] == study].iloc[0]


def test_labeler_and_policies():
    ignore = _study(
        load_dataset(FIXTURE, policy="ignore", blank="unknown", check_files=False), "53189527"
    )
    assert (
        np.isnan(ignore["Edema"])
        and np.isnan(ignore["Atelectasis"])
        and ignore["Cardiomegaly"] == 1
    )
    negbio = load_dataset(FIXTURE, labeler="negbio", policy="zeros", check_files=False)
    assert (
        _study(negbio, "53189527")["Edema"] == 1.0
        and _study(negbio, "53911762")["Pneumonia"] == 0.0
    )
    chexpert = load_dataset(FIXTURE, policy="zeros", check_files=False)
    assert (
        _study(chexpert, "53189527")["Edema"] == 0.0
        and _study(chexpert, "53911762")["Pneumonia"] == 1.0
    )
    with pytest.raises(DatasetError, match="labeler must be one of chexpert, negbio"):
        load_dataset(FIXTURE, labeler="nlp", check_files=False)


def test_images_in_the_release_tree(tmp_path):
    root = shutil.copytree(FIXTURE, tmp_path / "mimic-cxr-jpg")
    frame = load_dataset(root, check_files=False).frame
    for i, path in enumerate(frame["path"].iloc[:5]):
        write_image(Path(path), seed=i)
    with pytest.raises(DatasetError, match="2 of 7 images"):
        load_dataset(root)
    assert len(load_dataset(root, missing="drop")) == 5
