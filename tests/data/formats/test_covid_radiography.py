"""COVID-19 Radiography Database layout: class folders with images/ and per-image lung masks/."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxr_core.data.formats import detect_format, load_dataset, load_mask_set
from cxr_core.data.manifest import select_classes
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_image

CLASSES = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")


@pytest.fixture
def database(tmp_path):
    """The release's layout and file names, 2 images per class: 299 px images, 256 px masks."""
    root = tmp_path / "COVID-19_Radiography_Dataset"
    for c, cls in enumerate(CLASSES):
        for i in (1, 2):
            write_image(root / cls / "images" / f"{cls}-{i}.png", size=299, seed=10 * c + i)
            mask = np.zeros((256, 256), np.uint8)
            mask[64:192, 32 + 16 * i : 128 + 16 * i] = 255
            (root / cls / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / cls / "masks" / f"{cls}-{i}.png")
    return tmp_path


def test_classes_with_harmonised_names(database):
    assert detect_format(database) == ("covid-radiography", database)
    manifest = load_dataset(database)
    assert manifest.classes == ("COVID-19", "Lung Opacity", "Normal", "Viral Pneumonia")
    assert not manifest.label_space.multilabel and len(manifest) == 8
    assert manifest.frame["patient_id"].nunique() == 8  # no patient in the names: one image each
    three = select_classes(
        manifest, ["COVID-19", "Normal", "Viral Pneumonia"]
    )  # seed 002's classes
    assert len(three) == 6 and "2 images of Lung Opacity left out" in three.source


def test_lung_masks_for_segmentation(database):
    pairs = load_mask_set(database, size=64)
    assert pairs.target == "lung" and len(pairs) == 8 and pairs.images.shape == (8, 64, 64)
    first = pairs.masks[pairs.ids.index("COVID/images/COVID-1.png")]
    assert abs(first.mean() - (128 * 96) / 256**2) < 0.02  # the 256 px mask, resized with its image


def test_a_missing_mask_is_named(database):
    (database / "COVID-19_Radiography_Dataset" / "Normal" / "masks" / "Normal-2.png").unlink()
    with pytest.raises(DatasetError, match="1 image.* no mask .*Normal-2.png"):
        load_mask_set(database, size=64)
