"""Where the lungs are: a lung mask for a radiograph and what the rest of the tool does with it.

* :class:`LungSegmenter` runs a segmentation checkpoint (``checkpoints/lungs``) on a decoded
  radiograph and returns the mask at the image's own size, its lung-area fraction and contour.
* :func:`check_lungs`: the input check. A frontal chest film is
  about 10-40 % lung, in two lungs side by side; no lung, a sliver, lung over most of the image,
  or a mask that is not two lungs side by side means the film is not what the classifiers were
  trained on (a lateral view, another body part, a photo, a rotated or heavily cropped image). The
  input gate (:mod:`cxr_core.inference.gate`) given a segmenter adds its warning to the image's warnings.
* :func:`heatmap_mass_in_mask`: the share of a Grad-CAM heatmap's mass that falls inside the
  lungs, a plausibility number for explanations of lung findings; :func:`heatmap_within_mask`
  rescales a heatmap over the lungs alone.
* :func:`lung_contours`: ordered outline polygons of each lung, for drawing over the image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

# What counts as lung is defined once, in cxr_core.data.lung_mask (lung-masked classifiers use
# the same threshold and speck rule); the bundled lung model's path in cxr_core.artifacts.lung_model.
from cxr_core.artifacts.lung_model import DEFAULT_LUNG_CHECKPOINT  # noqa: F401 (re-exported)
from cxr_core.data.lung_mask import LUNG_THRESHOLD, MIN_COMPONENT_PIXELS, drop_specks
from cxr_core.data.preprocessing import to_cache_array
from cxr_core.errors import CheckpointError
from cxr_core.models.checkpoint import Checkpoint, load_checkpoint
from cxr_core.models.lung_mask import lung_model
from cxr_core.models.segmentation import predict_mask_probs

NO_LUNG_FRACTION = 0.005  # below this share of the image the model found no lung at all
LOW_FACTOR = 0.5  # "tiny": under half the smallest lung area seen in training
HIGH_FACTOR = 1.5  # "most of the image": over 1.5x the largest lung area seen in training

# Two lungs side by side, as on a frontal film. On the 138 Montgomery reference masks the two
# largest components' centroids are >= 23 % of the width apart and <= 8 % of the height apart,
# and the smaller is >= 59 % of the larger; the limits below leave about a 2x margin.
MIN_LUNG_SEPARATION = 0.12  # horizontal centroid distance, share of the image width
MAX_LUNG_OFFSET = 0.15  # vertical centroid distance, share of the image height
MIN_SIZE_RATIO = 0.25  # smaller lung / larger lung, in pixels

STATUS_OK = "ok"
STATUS_NONE = "none"
STATUS_TINY = "tiny"
STATUS_LARGE = "most_of_image"
STATUS_LAYOUT = "not_two_lungs"
NOT_FRONTAL_WARNING = "does not look like a frontal chest radiograph"


@dataclass(frozen=True)
class LungCheck:
    """Lung-area fraction of one image against the range the lung model saw in training."""

    fraction: float
    status: str  # ok | none | tiny | most_of_image | not_two_lungs
    low: float
    high: float

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def warning(self) -> str | None:
        """A sentence for the user when the image is outside the training range, else None."""
        if self.ok:
            return None
        found = {
            STATUS_NONE: "no lung was found",
            STATUS_TINY: f"the lungs cover only {self.fraction:.1%} of the image",
            STATUS_LARGE: f"'lung' covers {self.fraction:.1%} of the image",
            STATUS_LAYOUT: "the lung mask is not two lungs side by side (rotated, upside down or cropped?)",
        }[self.status]
        if self.status == STATUS_LAYOUT:
            return f"This image {NOT_FRONTAL_WARNING}: {found}. Predictions for it are unreliable."
        return (
            f"This image {NOT_FRONTAL_WARNING}: {found}, while frontal films cover {self.low:.0%}-{self.high:.0%} "
            "(the range accepted from the films the lung model was trained on). Predictions for it are unreliable."
        )


def lung_area_fraction(mask: np.ndarray) -> float:
    """Share of the image's pixels inside the mask, ignoring specks under MIN_COMPONENT_PIXELS."""
    m = drop_specks(np.asarray(mask, dtype=bool))
    return float(m.mean()) if m.size else 0.0


def check_lung_fraction(fraction: float, reference: dict) -> LungCheck:
    """Compare ``fraction`` with the training range ``reference`` (card ``data.mask_fraction``).

    Accepted: ``[LOW_FACTOR * min, HIGH_FACTOR * max]`` of the training masks' lung fractions.
    """
    try:
        low, high = (
            LOW_FACTOR * float(reference["min"]),
            min(1.0, HIGH_FACTOR * float(reference["max"])),
        )
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            "the lung model's card has no training lung-area range (data.mask_fraction); retrain it with cxr train"
        ) from None
    if fraction < NO_LUNG_FRACTION:
        status = STATUS_NONE
    elif fraction < low:
        status = STATUS_TINY
    elif fraction > high:
        status = STATUS_LARGE
    else:
        status = STATUS_OK
    return LungCheck(fraction=float(fraction), status=status, low=low, high=high)


def _side_by_side(labels: np.ndarray, sizes: np.ndarray) -> bool:
    """Whether the two largest components (``sizes`` of ``labels`` 1..n; 0 for a dropped one) sit
    side by side like the lungs of a frontal film."""
    if np.count_nonzero(sizes) < 2:
        return False
    first, second = np.argsort(-sizes, kind="stable")[:2]
    (y1, x1), (y2, x2) = ndimage.center_of_mass(labels > 0, labels, [first + 1, second + 1])
    height, width = labels.shape
    return (
        abs(x1 - x2) >= MIN_LUNG_SEPARATION * width
        and abs(y1 - y2) <= MAX_LUNG_OFFSET * height
        and sizes[second] >= MIN_SIZE_RATIO * sizes[first]
    )


def two_lungs_side_by_side(mask: np.ndarray) -> bool:
    """Whether the two largest components of ``mask`` sit side by side like the lungs of a frontal film."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool))
    return n >= 2 and _side_by_side(labels, np.bincount(labels.ravel())[1:])


def check_lungs(mask: np.ndarray, reference: dict) -> LungCheck:
    """The input check of one predicted lung mask: its area (:func:`check_lung_fraction`), then its layout.

    Both ignore specks (components under ``MIN_COMPONENT_PIXELS``); the mask is labelled once,
    which on a 2,500 × 2,048 film saves three passes over five million pixels.
    """
    m = np.asarray(mask, dtype=bool)
    labels, _ = ndimage.label(m)
    sizes = np.bincount(labels.ravel())[1:]
    sizes = np.where(sizes >= MIN_COMPONENT_PIXELS, sizes, 0)
    check = check_lung_fraction(float(sizes.sum()) / m.size if m.size else 0.0, reference)
    if check.ok and not _side_by_side(labels, sizes):
        return LungCheck(
            fraction=check.fraction, status=STATUS_LAYOUT, low=check.low, high=check.high
        )
    return check


def heatmap_mass_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of a non-negative heatmap's total mass inside ``mask`` (NaN for an all-zero map).

    The heatmap is resized (bilinear) to the mask's size if they differ; negative values are
    treated as 0, as Grad-CAM's ReLU does.
    """
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, None)
    m = np.asarray(mask, dtype=bool)
    if h.ndim != 2 or m.ndim != 2:
        raise ValueError(f"heatmap and mask must be 2-D, got {h.shape} and {m.shape}")
    if h.shape != m.shape:
        t = torch.from_numpy(h)[None, None]
        h = (
            F.interpolate(t, size=m.shape, mode="bilinear", align_corners=False)[0, 0]
            .clamp_(min=0)
            .numpy()
        )
    total = float(h.sum())
    return float(h[m].sum() / total) if total > 0 else float("nan")


def heatmap_within_mask(heatmap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The heatmap rescaled to [0, 1] over the cells inside ``mask``, zero outside, on the heatmap's own grid.

    A map's maximum often sits on the mediastinum, the diaphragm or a film edge and then sets the
    colour scale of the lungs too; rescaled over the lungs alone, the map shows how the evidence
    is spread inside them (a cell counts as lung when at least half of it is). Min-max as
    :func:`cxr_core.inference.explain.mask_border` rescales; all zeros when no cell is lung or
    the map is flat there.
    """
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, None)
    m = np.asarray(mask, dtype=bool)
    if h.ndim != 2 or m.ndim != 2:
        raise ValueError(f"heatmap and mask must be 2-D, got {h.shape} and {m.shape}")
    if m.shape != h.shape:
        share = F.interpolate(
            torch.from_numpy(m.astype(np.float32))[None, None], size=h.shape, mode="area"
        )[0, 0]
        m = share.numpy() >= 0.5
    out = np.zeros_like(h)
    if m.any():
        inside = h[m]
        low, high = float(inside.min()), float(inside.max())
        if high > low:
            out[m] = (inside - low) / (high - low)
    return out


_MOORE = (
    (0, 1),
    (1, 1),
    (1, 0),
    (1, -1),
    (0, -1),
    (-1, -1),
    (-1, 0),
    (-1, 1),
)  # clockwise from east (row, col)


def _trace(component: np.ndarray) -> np.ndarray:
    """Moore-neighbour tracing of one 8-connected component's outer border, as (row, col) points."""
    padded = np.pad(component, 1)
    rows, cols = np.nonzero(padded)
    start = (
        int(rows[0]),
        int(cols[0]),
    )  # top-most, then left-most pixel: its west neighbour is background
    points = [start]
    current, direction = start, 6  # we arrived "from the west"
    for _ in range(4 * padded.size):
        for k in range(8):
            d = (
                direction + 6 + k
            ) % 8  # start looking just counter-clockwise of where we came from
            r, c = current[0] + _MOORE[d][0], current[1] + _MOORE[d][1]
            if padded[r, c]:
                current, direction = (r, c), d
                break
        else:
            break  # a single isolated pixel
        if current == start:
            break
        points.append(current)
    return np.array(points, dtype=np.int64) - 1


def lung_contours(mask: np.ndarray, min_pixels: int = MIN_COMPONENT_PIXELS) -> list[np.ndarray]:
    """Closed outline of each lung as an ``(K, 2)`` array of ``(x, y)`` pixel coordinates.

    One polygon per 8-connected component of at least ``min_pixels`` pixels, largest first;
    the points are border pixels in order around the component (close the polygon by joining
    the last point to the first).
    """
    m = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    out = []
    for index in np.argsort(-sizes):
        if sizes[index] < min_pixels:
            continue
        rc = _trace(labels == index + 1)
        out.append(rc[:, ::-1].copy())
    return out


@dataclass(frozen=True)
class LungResult:
    """The lung mask of one image (at the image's own size) and the input check on it."""

    mask: np.ndarray
    fraction: float
    check: LungCheck

    def contours(self) -> list[np.ndarray]:
        return lung_contours(self.mask)


class LungSegmenter:
    """A lung segmentation checkpoint ready to run on decoded radiographs (float (H, W) in [0, 1]).

    Thread-safe, so one instance can be shared (the dashboard's cached lung model, the decode
    threads of ``cxr predict --lungs``): :meth:`segment` keeps no per-call state on the object and
    runs the model in eval mode under ``torch.inference_mode()``.
    """

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        self.checkpoint = checkpoint
        self.preprocess = checkpoint.preprocess
        self.model = lung_model(checkpoint, device)
        self.reference = dict(checkpoint.card.data.get("mask_fraction", {}))

    @classmethod
    def from_path(cls, path: str | Path, device: str | torch.device = "cpu") -> LungSegmenter:
        return cls(load_checkpoint(path), device)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Lung probability per pixel, float32 at the image's own size."""
        cache = to_cache_array(np.asarray(pixels, dtype=np.float32), self.preprocess.cache_size)
        with torch.inference_mode():
            probs = predict_mask_probs(self.model, cache[None], self.preprocess)[0]
            if probs.shape != pixels.shape:
                t = torch.from_numpy(probs)[None, None]
                probs = F.interpolate(t, size=pixels.shape, mode="bilinear", align_corners=False)[
                    0, 0
                ].numpy()
        return probs

    def segment(self, pixels: np.ndarray) -> LungResult:
        """Mask (specks removed), lung-area fraction and input check of one radiograph."""
        mask = drop_specks(self.probabilities(pixels) >= LUNG_THRESHOLD)
        return LungResult(
            mask=mask, fraction=float(mask.mean()), check=check_lungs(mask, self.reference)
        )


def mask_png(mask: np.ndarray) -> bytes:
    """A bool mask as an 8-bit PNG, 255 inside (the layout the mask adapter reads back)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()
