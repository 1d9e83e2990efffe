"""SIIM-ACR: the real run-length file, both encodings, several regions per image, masks for segmentation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_dataset, load_mask_set
from cxr_core.data.formats.siim import decode_rle
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_dicom, write_image

RLE = "siim-pneumothorax-train-rle.csv.gz"


@pytest.fixture(scope="module")
def rows(labels_root):
    return pd.read_csv(labels_root / RLE, dtype=str)


def test_every_row_of_the_real_file(labels_root, rows):
    assert detect_format(labels_root / RLE)[0] == "siim-acr"
    manifest = load_dataset(labels_root / RLE, check_files=False)
    positive = rows[" EncodedPixels"].str.strip() != "-1"
    assert len(manifest) == rows["ImageId"].nunique() == 12047
    assert (
        int(manifest.frame["Pneumothorax"].sum()) == rows.loc[positive, "ImageId"].nunique() == 2669
    )
    assert int(manifest.frame["regions"].sum()) == int(positive.sum())  # one row per region
    assert manifest.frame["regions"].max() > 1


def test_both_encodings_decode_to_the_same_mask():
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:5, 1] = mask[0:2, 3] = True  # column-major runs (start, length): (10, 3) and (24, 2)
    assert decode_rle("10 3 11 2", "relative", size=8).tolist() == mask.tolist()  # 11 after the end
    assert decode_rle("11 3 25 2", "absolute", size=8).tolist() == mask.tolist()  # 1-based
    assert not decode_rle("-1", "relative", size=8).any()
    with pytest.raises(DatasetError, match="outside a 8x8 mask"):
        decode_rle("60 10", "absolute", size=8)


def test_real_codes_decode_to_their_run_lengths(rows):
    codes = rows.loc[rows[" EncodedPixels"].str.strip() != "-1", " EncodedPixels"].head(20)
    for code in codes:
        lengths = np.array(code.split(), dtype=int)[1::2]
        assert decode_rle(code, "relative").sum() == lengths.sum()


def test_masks_of_several_regions_feed_segmentation(labels_root, rows, tmp_path):
    counts = rows.groupby("ImageId").size()
    two = counts[counts == 2].index[0]
    negative = rows.loc[rows[" EncodedPixels"].str.strip() == "-1", "ImageId"].iloc[0]
    folder = tmp_path / "siim"
    folder.mkdir()
    rows[rows["ImageId"].isin([two, negative])].to_csv(folder / "train-rle.csv", index=False)
    write_dicom(
        folder / "dicom-images-train" / "1.2" / "3.4" / f"{two}.dcm",
        size=64,
        PatientAge="38",
        ViewPosition="PA",
    )
    write_image(folder / "dicom-images-train" / f"{negative}.png", size=64)
    manifest = load_dataset(folder)
    assert manifest.frame.set_index("image_id").loc[two, "view"] == "PA"
    pairs = load_mask_set(folder, size=32)
    assert pairs.target == "pneumothorax" and pairs.ids == tuple(sorted([two, negative]))
    regions = [
        decode_rle(c, "relative") for c in rows.loc[rows["ImageId"] == two, " EncodedPixels"]
    ]
    union = np.logical_or(*regions)
    got = pairs.masks[pairs.ids.index(two)]
    assert got.shape == (32, 32) and abs(got.mean() - union.mean()) < 0.01
    assert not pairs.masks[pairs.ids.index(negative)].any()
    assert len(load_mask_set(folder, positives_only=True)) == 1
