"""What counts as lung, and what a lung-masked classifier is allowed to see (pure NumPy).

``preprocess: {lung_mask: true}`` in a classification config blacks out every pixel outside the
(dilated) lungs before the classifier sees an image, so it cannot learn from what lies outside
them: text markers, electrodes, the shoulders, the hospital's collimation. This module is the
half of that step that needs no network: from a lung-probability map to a mask
(:func:`lung_mask_of`) and from a mask to the masked image (:func:`mask_outside`), plus the
settings a model card records (:class:`LungMaskConfig`). The other half, running the lung
segmentation network, is :class:`cxr_core.models.lung_mask.LungMasker`, which calls these two
functions; the image cache (training, ``cxr evaluate``, ``cxr card refresh``, ``cxr gate fit``)
and the Predictor all go through that one masker.

Where the lungs are found: on the classifier's own cache array (``data.cache_size`` px, uint8),
not on the original file. The cache is all that training ever sees, and the Predictor holds the
very same array one step before the network, so training and inference segment identical
inputs. The dilation is a share of that array's side (``dilation * cache_size`` pixels, rounded),
so it keeps the lung edges and costophrenic angles the segmentation tends to clip.

:data:`LUNG_THRESHOLD` and :func:`drop_specks` also define the lung masks of
:class:`cxr_core.inference.lungs.LungSegmenter` (input check, heatmap plausibility), so a
"lung" means the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from cxr_core.errors import ConfigError
from cxr_core.utils.settings import check_known_keys

LUNG_THRESHOLD = 0.5
MIN_COMPONENT_PIXELS = (
    3  # isolated specks (resampling artefacts in the reference masks) are not lungs
)
DEFAULT_DILATION = (
    0.03  # 7 px at a 224 px cache: the pleural edge and the costophrenic angles stay in
)
MAX_DILATION = 0.25  # beyond a quarter of the side the "mask" keeps nearly the whole film
# Bump whenever the masking changes which pixels survive: the version is part of every masked
# image cache's key, so caches masked the old way are never read as masked the new way.
LUNG_MASK_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class LungMaskConfig:
    """The lung masking a model was trained with, as its card records it.

    ``weights_sha256`` (the lung checkpoint's weights checksum, ``cxr_weights_sha256``) decides
    which lung model masks the images; ``checkpoint`` is only where it was at training time, the
    first place to look for it.
    """

    weights_sha256: str
    checkpoint: str = ""
    dilation: float = DEFAULT_DILATION

    def __post_init__(self) -> None:
        if not isinstance(self.weights_sha256, str) or not _SHA256.match(self.weights_sha256):
            raise ConfigError(
                f"lung masking needs the lung model's weights sha256 (64 hex digits), got {self.weights_sha256!r}"
            )
        if (
            isinstance(self.dilation, bool)
            or not isinstance(self.dilation, (int, float))
            or not 0.0 <= self.dilation <= MAX_DILATION
        ):
            raise ConfigError(
                f"lung mask dilation is a share of the image side in [0, {MAX_DILATION}], got {self.dilation!r}"
            )
        object.__setattr__(self, "dilation", float(self.dilation))

    def radius(self, side: int) -> int:
        """Dilation in pixels of a ``side``-px image."""
        return int(round(self.dilation * side))

    def identity(self) -> str:
        """Everything the masked pixels depend on besides the image: part of a masked cache's key."""
        return (
            f"lung-mask v{LUNG_MASK_VERSION} weights={self.weights_sha256} dilation={self.dilation!r} "
            f"threshold={LUNG_THRESHOLD!r} min_component={MIN_COMPONENT_PIXELS}"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LungMaskConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"lung mask settings must be a mapping, got {d!r}")
        check_known_keys(cls, d, "lung mask settings")
        return cls(**d)


def drop_specks(mask: np.ndarray, min_pixels: int = MIN_COMPONENT_PIXELS) -> np.ndarray:
    """The mask without connected components (4-connected) smaller than ``min_pixels``."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.asarray(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by a disk of ``radius`` pixels (exact: boolean morphology, no floats)."""
    m = np.asarray(mask, dtype=bool)
    if radius <= 0 or not m.any():
        return m.copy()
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return ndimage.binary_dilation(m, structure=yy * yy + xx * xx <= radius * radius)


def lung_mask_of(probabilities: np.ndarray, settings: LungMaskConfig) -> np.ndarray:
    """The kept region of one image: lung probability >= :data:`LUNG_THRESHOLD`, specks dropped, dilated.

    Every component the segmentation finds is kept (not just the two largest): a consolidated
    lung often comes out in pieces, and dropping one would black out the finding itself.
    """
    probs = np.asarray(probabilities)
    if probs.ndim != 2:
        raise ValueError(f"lung_mask_of takes one (H, W) probability map, got shape {probs.shape}")
    return dilate(drop_specks(probs >= LUNG_THRESHOLD), settings.radius(probs.shape[-1]))


def mask_outside(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 images with every pixel outside ``masks`` set to 0 (black); shapes must match."""
    arr = np.asarray(images)
    m = np.asarray(masks, dtype=bool)
    if arr.dtype != np.uint8 or arr.shape != m.shape:
        raise ValueError(
            f"mask_outside takes uint8 images and boolean masks of one shape, got {arr.dtype} "
            f"{arr.shape} and {m.shape}"
        )
    return np.where(m, arr, np.uint8(0))
