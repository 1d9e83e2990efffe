"""NIH expert labels (Majkowska 2019): the real file, images found like NIH's, a second truth by image id."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_dataset
from cxr_core.data.formats.nih_expert import expert_labels_for
from tests.data.formats.conftest import first_rows, write_image

EXPERT = "google2019_nih-chest-xray-labels.csv.gz"


@pytest.fixture(scope="module")
def expert(labels_root):
    return load_dataset(labels_root / EXPERT, check_files=False)


def test_every_row_of_the_real_file(labels_root, expert):
    assert detect_format(labels_root / EXPERT)[0] == "nih-expert"  # not plain NIH: 4 more columns
    assert len(expert) == 4376 and expert.frame["patient_id"].nunique() == 1695
    assert expert.classes == ("Fracture", "Pneumothorax", "Lung Opacity", "Nodule/Mass")
    labels = expert.labels()
    assert dict(zip(expert.classes, (labels == 1).sum(axis=0))) == {
        "Fracture": 186,
        "Pneumothorax": 238,
        "Lung Opacity": 2166,
        "Nodule/Mass": 605,
    }
    assert expert.frame["split"].value_counts().to_dict() == {"val": 2414, "test": 1962}
    raw = pd.read_csv(labels_root / EXPERT)
    np.testing.assert_array_equal(labels[:, 2], (raw["Airspace opacity"] == "YES").to_numpy())


def test_images_are_found_like_nih_images(labels_root, tmp_path):
    csv = first_rows(labels_root / EXPERT, tmp_path / "expert.csv", lambda f: f.index < 6)
    names = pd.read_csv(csv)["Image Index"]
    for i, name in enumerate(names):
        write_image(tmp_path / "images_001" / "images" / name, seed=i)
    manifest = load_dataset(csv)
    assert len(manifest) == 6 and all(p.endswith(n) for p, n in zip(manifest.frame["path"], names))


def test_expert_labels_line_up_with_an_nih_manifest(nih14_root, labels_root, expert):
    nih = load_dataset(nih14_root)
    truth = expert_labels_for(nih, expert)
    assert list(truth.columns) == list(expert.classes) and len(truth) == len(nih)
    adjudicated = truth.notna().all(axis=1)
    with gzip.open(labels_root / EXPERT, "rt") as fh:
        raw = pd.read_csv(fh).set_index("Image Index")
    shared = nih.frame.loc[adjudicated, "image_id"]
    assert 0 < len(shared) == len(set(nih.frame["image_id"]) & set(raw.index))
    expected = (raw.loc[shared, "Pneumothorax"] == "YES").to_numpy(dtype=float)
    np.testing.assert_array_equal(truth.loc[adjudicated, "Pneumothorax"].to_numpy(), expected)
    assert truth.loc[~adjudicated].isna().all().all()
