"""Where a radiograph carries burned-in text and markers ("PORTABLE", "AP", "L"/"R", initials).

Heatmaps often peak on these: they are the sharpest, brightest marks on the film, and a model
can learn that "PORTABLE" means a sick, supine patient. :func:`burned_in_text_mask` finds them
so that :mod:`cxr_core.inference.explain` can leave them out of a heatmap's normalisation, the
way it leaves out the outer border.

What sets burned-in characters apart from anatomy, wires and metal in the patient, at the
working resolution (:data:`WORK_SIDE` px on the long side, where a NIH "PORTABLE" is about
5 px tall):

- they stand far above their immediate surroundings (white top-hat contrast of at least
  :data:`MIN_CONTRAST` of the intensity range), brighter than anything else nearby on the film;
- they are drawn with thin strokes whose edges jump within a pixel: most of their top-hat
  contrast (:data:`MIN_THIN_SHARE`) survives an opening only :data:`STROKE_OPENING` px wide,
  while the rim of a clavicle, a pacemaker or an electrode has most of its contrast in broader
  structures;
- they are small and compact: a word or a marker, not a long wire or a rib;
- they sit near the edges of the film (their centre within :data:`PERIPHERY` of a side).

Pure numpy/scipy, on the decoded pixels alone: tens of milliseconds a film, no model. On the
2,074 NIH ChestX-ray14 films in the shared data it marks something on 85% of them, covering 0.44%
of a film on average and 3.0% at most; tests/inference/test_burned_in.py checks the text of two of
them is covered. It also takes the odd wire end or electrode near the edge of the film, which a
heatmap's normalisation loses nothing by ignoring.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

WORK_SIDE = 256
"""Long side (px) the detector works at, so its sizes mean the same on any film."""
BACKGROUND_OPENING = 11
"""Opening (px) wider than a character: what it removes is the bright detail (the top-hat)."""
STROKE_OPENING = 5
"""Opening (px) wider than a stroke of a character but narrower than most anatomy."""
CANDIDATE_CONTRAST = 0.15
"""Top-hat (fraction of the intensity range) a pixel needs to belong to a candidate mark."""
MIN_CONTRAST = 0.35
"""Peak top-hat a candidate mark needs: burned-in text stands far above its surroundings."""
MIN_EDGE = 0.15
"""Steepest intensity step per pixel (Sobel) a mark needs: characters have sharp edges."""
MIN_THIN_SHARE = 0.6
"""Share of a mark's top-hat that must come from structures thinner than ``STROKE_OPENING``."""
MAX_HEIGHT = 0.15
MAX_WIDTH = 0.35
"""Largest mark (fraction of the image height / width): a word or a marker, not a wire."""
MIN_PIXELS = 4
PERIPHERY = 0.25
"""A mark's centre lies within this fraction of the image side from an edge."""
GROW = 2
"""Pixels (at ``WORK_SIDE``) the found marks are dilated by, to cover their anti-aliased rims."""


def burned_in_text_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean (H, W) mask of burned-in text and markers in a gray radiograph (bright = dense).

    ``pixels`` is one gray plane in [0, 1] (``LoadedImage.pixels``); the mask has its shape.
    A film without such marks gets an all-False mask.
    """
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ValueError(
            f"burned_in_text_mask needs one gray (H, W) image, got shape {pixels.shape}"
        )
    work = _to_work_size(np.clip(np.asarray(pixels, dtype=np.float64), 0.0, 1.0))
    found = _marks(work)
    return _to_shape(found, pixels.shape)


def _to_work_size(pixels: np.ndarray) -> np.ndarray:
    """Resample so the long side is ``WORK_SIDE`` px; downscaling averages first, like an area resize."""
    scale = WORK_SIDE / max(pixels.shape)
    if scale == 1.0:
        return pixels
    if scale < 1.0:
        pixels = ndimage.uniform_filter(
            pixels, size=max(1, int(round(1.0 / scale))), mode="nearest"
        )
    shape = tuple(max(1, int(round(side * scale))) for side in pixels.shape)
    return ndimage.zoom(
        pixels,
        (shape[0] / pixels.shape[0], shape[1] / pixels.shape[1]),
        order=1,
        mode="nearest",
        grid_mode=True,
    )


def _to_shape(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour mapping of a working-size mask onto the image's own pixel grid."""
    rows = np.minimum(
        (np.arange(shape[0]) + 0.5) * mask.shape[0] // shape[0], mask.shape[0] - 1
    ).astype(int)
    cols = np.minimum(
        (np.arange(shape[1]) + 0.5) * mask.shape[1] // shape[1], mask.shape[1] - 1
    ).astype(int)
    return mask[np.ix_(rows, cols)]


def _marks(work: np.ndarray) -> np.ndarray:
    """The mark mask at working size (see the module docstring for the rules)."""
    height, width = work.shape
    top_hat = work - ndimage.grey_opening(work, size=(BACKGROUND_OPENING, BACKGROUND_OPENING))
    thin = work - ndimage.grey_opening(work, size=(STROKE_OPENING, STROKE_OPENING))
    edge = np.hypot(ndimage.sobel(work, 0), ndimage.sobel(work, 1)) / 8.0
    candidate = top_hat >= CANDIDATE_CONTRAST
    # one pixel of dilation joins the letters of a word into one mark
    labels, _ = ndimage.label(ndimage.binary_dilation(candidate), structure=np.ones((3, 3), bool))
    keep = np.zeros_like(candidate)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[box] == index
        mark = region & candidate[box]
        rows, cols = box[0].stop - box[0].start, box[1].stop - box[1].start
        centre_y = (box[0].start + box[0].stop) / 2.0 / height
        centre_x = (box[1].start + box[1].stop) / 2.0 / width
        if (
            rows > MAX_HEIGHT * height
            or cols > MAX_WIDTH * width
            or mark.sum() < MIN_PIXELS
            or min(centre_y, 1.0 - centre_y, centre_x, 1.0 - centre_x) >= PERIPHERY
        ):
            continue
        contrast = top_hat[box][mark]
        if (
            contrast.max() >= MIN_CONTRAST
            and edge[box][region].max() >= MIN_EDGE
            and thin[box][mark].sum() >= MIN_THIN_SHARE * contrast.sum()
        ):
            keep[box] |= mark
    return ndimage.binary_dilation(keep, iterations=GROW) if keep.any() else keep
