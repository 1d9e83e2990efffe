"""The lung masker: the bundled lung model's masks of cache arrays, blacked-out images, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.data.lung_mask import LungMaskConfig
from cxr_core.errors import CheckpointError
from cxr_core.metrics.segmentation import dice_score
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.models.lung_mask import LungMasker

BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints"
LUNGS = BUNDLED / "lungs" / "model.safetensors"


@pytest.fixture(scope="module")
def films(montgomery_root) -> tuple[np.ndarray, np.ndarray]:
    """Four real Montgomery films at 256 px (uint8) and their manual lung masks."""
    names = sorted(p.name for p in (montgomery_root / "images").glob("*.png"))[:4]
    images = np.stack(
        [np.asarray(Image.open(montgomery_root / "images" / n).convert("L")) for n in names]
    )
    masks = np.stack(
        [np.asarray(Image.open(montgomery_root / "masks" / n).convert("L")) > 127 for n in names]
    )
    return images, masks


@pytest.fixture(scope="module")
def lungs():
    return load_checkpoint(LUNGS)


def masker(ckpt, dilation: float) -> LungMasker:
    return LungMasker(
        ckpt, LungMaskConfig(weights_sha256=checkpoint_digest(LUNGS), dilation=dilation)
    )


def test_masks_find_the_manual_lungs_and_the_dilation_only_adds(films, lungs):
    images, reference = films
    tight, loose = masker(lungs, 0.0).masks(images), masker(lungs, 0.03).masks(images)
    assert tight.shape == images.shape and tight.dtype == bool
    for found, truth in zip(tight, reference):
        assert dice_score(found, truth) > 0.9
    assert (loose >= tight).all() and loose.sum() > 1.15 * tight.sum()
    # 0.03 of 256 px is an 8 px disk: nothing kept lies farther than that from the tight mask
    distance = ndimage.distance_transform_edt(~tight[0])
    assert distance[loose[0]].max() <= 8 and (distance[loose[0]] > 7).any()


def test_masked_images_are_black_outside_the_mask_and_untouched_inside(films, lungs):
    images, _ = films
    m = masker(lungs, 0.03)
    masked, masks = m(images), m.masks(images)
    assert masked.dtype == np.uint8 and masked.shape == images.shape
    assert (masked[~masks] == 0).all()
    np.testing.assert_array_equal(masked[masks], images[masks])
    assert 0.15 < masks.mean() < 0.6


def test_masks_do_not_depend_on_the_batch_or_the_callers_threads(films, lungs):
    images, _ = films
    m = masker(lungs, 0.03)
    together = m.masks(images)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        alone = np.stack([m.masks(images[i : i + 1])[0] for i in range(len(images))])
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(together, alone)
    assert torch.get_num_threads() == before  # the masker restores the caller's setting


def test_a_classifier_is_refused_as_lung_model():
    ckpt = load_checkpoint(BUNDLED / "pneumonia" / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a lung segmentation model"):
        LungMasker(ckpt, LungMaskConfig(weights_sha256="ab" * 32))


def test_only_uint8_batches_are_masked(films, lungs):
    with pytest.raises(ValueError, match="uint8 cache arrays"):
        masker(lungs, 0.03).masks(films[0][0])
