"""The pure-NumPy half of lung masking: probabilities -> kept region -> masked image, and the card settings."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.data.lung_mask import (
    DEFAULT_DILATION,
    LUNG_MASK_VERSION,
    LungMaskConfig,
    dilate,
    drop_specks,
    lung_mask_of,
    mask_outside,
)
from cxr_core.data.preprocessing import PreprocessConfig, prepare_image
from cxr_core.errors import ConfigError

SHA = "ab" * 32


def test_masking_keeps_the_dilated_lungs_and_blacks_out_the_rest():
    """A hand-built 40 px 'film': two rectangular lungs at probability 0.9, one at exactly the
    threshold, a 2-pixel speck, and probabilities just under 0.5 everywhere else."""
    probs = np.full((40, 40), 0.49, dtype=np.float32)
    probs[10:30, 5:15] = 0.9  # left lung
    probs[10:30, 25:35] = 0.5  # right lung, exactly at the threshold: lung
    probs[2, 2:4] = 0.99  # a speck below MIN_COMPONENT_PIXELS: not lung
    settings = LungMaskConfig(weights_sha256=SHA, dilation=0.05)  # 2 px at 40 px
    mask = lung_mask_of(probs, settings)

    expected = np.zeros((40, 40), dtype=bool)
    for rows, cols in ((slice(10, 30), slice(5, 15)), (slice(10, 30), slice(25, 35))):
        core = np.zeros((40, 40), dtype=bool)
        core[rows, cols] = True
        yy, xx = np.nonzero(core)
        grid_y, grid_x = np.mgrid[:40, :40]
        for y, x in zip(yy, xx):
            expected |= (grid_y - y) ** 2 + (grid_x - x) ** 2 <= 4
    np.testing.assert_array_equal(mask, expected)
    assert not mask[2, 2] and not mask[0, 0]
    assert mask[8, 7] and not mask[7, 7]  # 2 px above the left lung kept, 3 px not
    assert (
        mask[9, 4] and not mask[8, 3]
    )  # the corner grows round (distance sqrt(2) yes, sqrt(8) no)

    image = np.arange(1600, dtype=np.int64).reshape(40, 40) % 251 + 1  # no zeros of its own
    image = image.astype(np.uint8)
    masked = mask_outside(image, mask)
    assert masked.dtype == np.uint8
    np.testing.assert_array_equal(masked[mask], image[mask])
    assert (masked[~mask] == 0).all()


def test_dilation_is_an_exact_disk_and_zero_or_empty_masks_stay_as_they_are():
    point = np.zeros((11, 11), dtype=bool)
    point[5, 5] = True
    assert dilate(point, 2).sum() == 13  # integer points with x^2 + y^2 <= 4
    assert dilate(point, 3).sum() == 29
    np.testing.assert_array_equal(dilate(point, 0), point)
    assert not dilate(np.zeros((5, 5), dtype=bool), 3).any()  # no lung found: nothing is kept


def test_specks_are_dropped_by_size():
    mask = np.zeros((10, 10), dtype=bool)
    mask[0, 0:2] = True  # 2 px
    mask[5, 5:8] = True  # 3 px
    kept = drop_specks(mask)
    assert not kept[0, 0] and kept[5, 5:8].all() and kept.sum() == 3


def test_the_dilation_is_a_share_of_the_image_side():
    settings = LungMaskConfig(weights_sha256=SHA)
    assert settings.dilation == DEFAULT_DILATION == 0.03
    assert settings.radius(224) == 7 and settings.radius(256) == 8 and settings.radius(64) == 2


def test_identity_names_everything_the_masked_pixels_depend_on():
    a = LungMaskConfig(weights_sha256=SHA, checkpoint="/x/lungs.safetensors")
    assert f"v{LUNG_MASK_VERSION}" in a.identity() and SHA in a.identity()
    assert (
        a.identity() == LungMaskConfig(weights_sha256=SHA, checkpoint="/moved/elsewhere").identity()
    )
    assert a.identity() != LungMaskConfig(weights_sha256="cd" * 32).identity()
    assert a.identity() != LungMaskConfig(weights_sha256=SHA, dilation=0.05).identity()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights_sha256": "abc"}, "64 hex digits"),
        ({"weights_sha256": SHA, "dilation": -0.01}, "share of the image side"),
        ({"weights_sha256": SHA, "dilation": 0.5}, "share of the image side"),
        ({"weights_sha256": SHA, "dilation": True}, "share of the image side"),
    ],
)
def test_bad_lung_mask_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        LungMaskConfig(**kwargs)


def test_preprocessing_round_trips_lung_mask_and_omits_it_when_off():
    plain = PreprocessConfig(cache_size=224, input_size=160)
    assert "lung_mask" not in plain.to_dict()  # cards of unmasked models read as before
    assert PreprocessConfig.from_dict(plain.to_dict()) == plain
    masked = PreprocessConfig(
        cache_size=224, input_size=160, lung_mask=LungMaskConfig(SHA, "/l.safetensors", 0.04)
    )
    d = masked.to_dict()
    assert d["lung_mask"] == {
        "weights_sha256": SHA,
        "checkpoint": "/l.safetensors",
        "dilation": 0.04,
    }
    assert PreprocessConfig.from_dict(d) == masked
    with pytest.raises(ConfigError, match="lung mask settings 'margin'"):
        PreprocessConfig.from_dict({**d, "lung_mask": {**d["lung_mask"], "margin": 3}})


def test_prepare_image_refuses_lung_masked_preprocessing():
    masked = PreprocessConfig(cache_size=64, input_size=64, lung_mask=LungMaskConfig(SHA))
    with pytest.raises(ConfigError, match="Predictor"):
        prepare_image(np.full((64, 64), 0.5, dtype=np.float32), masked)


def test_mask_outside_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="uint8"):
        mask_outside(np.zeros((4, 4), dtype=np.float32), np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="one shape"):
        mask_outside(np.zeros((4, 4), dtype=np.uint8), np.ones((4, 5), dtype=bool))
