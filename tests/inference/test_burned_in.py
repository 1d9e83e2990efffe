"""The burned-in text detector on a synthetic film with drawn text and on real NIH films with their own."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from cxr_core.inference.burned_in import burned_in_text_mask

SIDE = 512
# The "lungs" of the synthetic film: two darker ellipses in its middle.
LUNG_CENTRES = ((0.5, 0.33), (0.5, 0.67))


def _film(rng: np.random.Generator) -> np.ndarray:
    """Smooth brightness gradient, two darker lung fields with soft rib stripes, film noise."""
    yy, xx = np.mgrid[:SIDE, :SIDE] / SIDE
    film = 0.35 + 0.25 * yy + 0.1 * np.abs(xx - 0.5)
    for cy, cx in LUNG_CENTRES:
        inside = ((yy - cy) / 0.3) ** 2 + ((xx - cx) / 0.13) ** 2
        film -= 0.2 * np.exp(-(inside**2)) * (0.8 + 0.2 * np.cos(yy * 60))
    return np.clip(film + rng.normal(0, 0.02, film.shape), 0, 1)


def _lungs() -> np.ndarray:
    yy, xx = np.mgrid[:SIDE, :SIDE] / SIDE
    return np.logical_or.reduce(
        [((yy - cy) / 0.3) ** 2 + ((xx - cx) / 0.13) ** 2 <= 1 for cy, cx in LUNG_CENTRES]
    )


def _with_text(film: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The film with "PORTABLE", "AP" and an "L" marker burned in near its edges, and the drawn pixels.

    Bold, as the overlays on NIH films are: thin hairline fonts fade below the detector's contrast
    once the film is reduced to its working size.
    """
    canvas = Image.fromarray(np.zeros(film.shape, np.uint8))
    draw = ImageDraw.Draw(canvas)
    word = ImageFont.load_default(size=14)
    draw.text((30, 40), "PORTABLE", fill=255, font=word, stroke_width=1, stroke_fill=255)
    draw.text((400, 30), "AP", fill=255, font=word, stroke_width=1, stroke_fill=255)
    draw.text(
        (460, 240),
        "L",
        fill=255,
        font=ImageFont.load_default(size=24),
        stroke_width=1,
        stroke_fill=255,
    )
    ink = np.asarray(canvas) / 255.0
    return np.maximum(film, 0.97 * ink), ink > 0.5


def test_synthetic_text_is_found_and_the_lungs_are_not():
    rng = np.random.default_rng(0)
    film = _film(rng)
    marked, ink = _with_text(film)
    mask = burned_in_text_mask(marked)
    assert mask.shape == marked.shape and mask.dtype == bool
    assert mask[ink].mean() >= 0.95  # the strokes of every character
    assert not (mask & _lungs()).any()
    assert mask.mean() < 0.02
    # each word on its own (not only the large marker)
    for rows, cols in (
        (slice(35, 65), slice(25, 120)),
        (slice(25, 55), slice(395, 430)),
        (slice(235, 275), slice(455, 480)),
    ):
        assert mask[rows, cols][ink[rows, cols]].mean() >= 0.9
    assert not burned_in_text_mask(film).any()  # gradient, lungs and noise alone are not text


def test_mask_does_not_depend_on_the_resolution_of_the_film():
    marked, _ = _with_text(_film(np.random.default_rng(1)))
    full = burned_in_text_mask(marked)
    half = burned_in_text_mask(marked[::2, ::2].copy())
    upscaled = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)
    assert (full & upscaled).sum() / (full | upscaled).sum() > 0.8


def test_a_non_gray_array_is_refused():
    with pytest.raises(ValueError, match="gray"):
        burned_in_text_mask(np.zeros((8, 8, 3)))


# Real NIH films (256 px) and where their burned-in text is, as (rows, cols) boxes read off the
# images: 00000468_029 "PORTABLE", "AP" and a circled "L" on the black background above the
# shoulders; 00000261_002 "RIGHT" along the left edge, an outlined arrow and a "PORTABLE" label
# on the bright abdomen.
NIH_TEXT = {
    "00000468_029.png": [((24, 34), (39, 73)), ((8, 17), (202, 214)), ((1, 19), (222, 238))],
    "00000261_002.png": [((25, 58), (12, 21)), ((227, 243), (58, 69)), ((231, 240), (132, 161))],
}


@pytest.mark.parametrize("name", sorted(NIH_TEXT))
def test_real_nih_text_is_covered_and_little_else(nih14_root, name):
    pixels = np.asarray(Image.open(nih14_root / "images" / name).convert("L"), np.float32) / 255.0
    mask = burned_in_text_mask(pixels)
    for (top, bottom), (left, right) in NIH_TEXT[name]:
        box = pixels[top:bottom, left:right]
        strokes = (
            np.abs(box - np.median(box)) > 0.15
        )  # the characters (and their dark outlines) against the film
        assert mask[top:bottom, left:right][strokes].mean() >= 0.95, (name, top, left)
    assert mask.mean() < 0.03
    assert not mask[96:176, 64:192].any()  # the middle of the chest
