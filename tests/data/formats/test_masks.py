from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_core.data.formats.masks import load_mask_folders, read_mask
from cxr_core.errors import DatasetError


def _pair(
    root, name: str, size: int = 32, mask_size: int | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
        root / "images" / f"{name}.png"
    )
    side = mask_size or size
    if mask is None:
        mask = np.zeros((side, side), np.uint8)
        mask[side // 4 : side // 2, side // 4 : 3 * side // 4] = 255
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return mask


def test_pairs_load_as_uint8_images_and_bool_masks(tmp_path):
    written = {name: _pair(tmp_path, name) for name in ("b", "a")}
    pairs = load_mask_folders(tmp_path)
    assert pairs.ids == ("a", "b") and pairs.patients == ("a", "b")
    assert pairs.images.dtype == np.uint8 and pairs.images.shape == (2, 32, 32)
    np.testing.assert_array_equal(pairs.masks[0], written["a"] == 255)
    original = np.asarray(Image.open(tmp_path / "images" / "a.png"))
    np.testing.assert_array_equal(pairs.images[0], original)  # 8-bit at cache size: unchanged
    sub = pairs.subset([1])
    assert sub.ids == ("b",) and sub.masks.shape == (1, 32, 32)


def test_resizing_keeps_masks_binary(tmp_path):
    _pair(tmp_path, "a", size=64)
    pairs = load_mask_folders(tmp_path, size=32)
    assert pairs.masks.shape == (1, 32, 32) and pairs.masks.dtype == bool
    assert pairs.masks.mean() == pytest.approx(
        0.125
    )  # a 16x32 block of 64x64, halved in each direction


def test_label_maps_count_the_listed_labels(tmp_path):
    labels = np.zeros((16, 16), np.uint8)
    labels[2:6, 2:6] = 1  # right lung
    labels[2:6, 10:14] = 2  # left lung
    labels[10:14, 6:10] = 3  # heart
    _pair(tmp_path, "a", size=16, mask=labels)
    assert load_mask_folders(tmp_path).masks[0].sum() == 48  # default: every non-zero label
    assert load_mask_folders(tmp_path, foreground=[1, 2]).masks[0].sum() == 32
    assert read_mask(tmp_path / "masks" / "a.png", foreground=[3]).sum() == 16


def test_an_image_without_its_mask_is_named(tmp_path):
    _pair(tmp_path, "a")
    _pair(tmp_path, "b")
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\).*have no mask.*\bb\b"):
        load_mask_folders(tmp_path)


def test_a_mask_without_its_image_is_named(tmp_path):
    _pair(tmp_path, "a")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "masks" / "orphan.png")
    with pytest.raises(DatasetError, match="orphan"):
        load_mask_folders(tmp_path)


def test_a_mask_of_another_size_is_refused_with_both_sizes(tmp_path):
    _pair(tmp_path, "a", size=32, mask_size=30)
    with pytest.raises(DatasetError, match=r"30x30 px but its image .* is 32x32 px"):
        load_mask_folders(tmp_path)


def test_a_missing_masks_folder_says_what_layout_is_expected(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no masks/ folder"):
        load_mask_folders(tmp_path)


def test_a_colour_mask_is_refused(tmp_path):
    _pair(tmp_path, "a")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match="single-channel"):
        load_mask_folders(tmp_path)


def test_montgomery_masks_match_the_manifest(montgomery_root):
    pairs = load_mask_folders(montgomery_root)
    manifest = pd.read_csv(montgomery_root / "manifest.csv", dtype={"id": str}).set_index("id")
    assert len(pairs) == 138 and pairs.images.shape == (138, 256, 256)
    fractions = pairs.masks.mean(axis=(1, 2))
    expected = manifest.loc[list(pairs.ids), "mask_fraction"].to_numpy()
    np.testing.assert_allclose(fractions, expected, atol=6e-5)  # the manifest rounds to 4 decimals
