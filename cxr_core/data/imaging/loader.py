"""``load_image``: any radiograph file (PNG, JPEG, BMP, TIFF, DICOM) as one float image.

Every other module (cache building, prediction, the dashboard upload) goes through
``load_image`` so that a radiograph looks the same wherever it is read: gray, float32 in
[0, 1], bright = dense (bone white as a reader sees it on a light box). The decoder is chosen
from the content, not the name; every failure, including any exception a decoder library
raises, is an ``ImageLoadError`` naming the file and what to do.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_core.data.imaging.dicom import load_dicom
from cxr_core.data.imaging.integrity import FLAT_RUN_FORMATS, check_flat_runs
from cxr_core.data.imaging.limits import DEFAULT_LIMITS, ImageLimits, check_byte_count, read_file
from cxr_core.data.imaging.raster import load_pil, open_pil
from cxr_core.data.imaging.sniff import (
    DICOM_EXTENSIONS,
    has_dicom_marker,
    looks_like_raw_dicom,
    not_an_image_message,
)
from cxr_core.errors import ImageLoadError

logger = logging.getLogger(__name__)


@dataclass
class LoadedImage:
    """A radiograph as float32 (H, W) in [0, 1], 1.0 = brightest, plus JSON-safe metadata.

    ``stored`` keeps a monochrome DICOM's stored values at full depth (before the modality
    rescale in ``meta["rescale"]`` and the file's window in ``meta["window"]``; MONOCHROME1
    not inverted), so a viewer can window/level the 12-16 bits a detector recorded instead of
    the 8-bit display the window chose. ``None`` for other files, whose ``pixels`` hold all
    their depth already.
    """

    pixels: np.ndarray
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    stored: np.ndarray | None = field(default=None, repr=False)


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> LoadedImage:
    """Read a radiograph from a path or from raw bytes (dashboard uploads pass ``name``).

    Raises ``ImageLoadError`` for anything that is not a single readable 2-D radiograph within
    ``limits``; the message starts with the file name.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "uploaded image"
        suffix = Path(label).suffix.lower()
        data = bytes(source)
        check_byte_count(len(data), label, limits)
    elif isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        suffix = Path(source).suffix.lower()
        data = read_file(Path(source), label, limits)
    else:
        raise ImageLoadError(
            f"{name or 'image'}: expected a file path or the file's bytes, got "
            f"{type(source).__name__}; pass the path of a PNG, JPEG, BMP, TIFF or DICOM file."
        )

    try:
        pixels, meta, stored = _decode(data, label, suffix, limits)
    except ImageLoadError:
        raise
    except MemoryError as exc:
        raise ImageLoadError(
            f"{label}: decoding the image needs more memory than is available. Downscale it or "
            "lower ImageLimits so that such files are refused before decoding."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - Pillow, pydicom, its plugins and numpy raise many types
        # One damaged file must give one clear row, never abort a batch with a traceback.
        logger.debug("decoder failure for %s", label, exc_info=True)
        raise ImageLoadError(
            f"{label}: the image could not be decoded ({_exception_name(exc)}: {exc}). The file may be "
            "damaged or non-conformant; re-export it."
        ) from exc

    pixels = pixels.astype(np.float32, copy=False)
    meta["constant"] = bool(pixels.size) and float(pixels.min()) == float(pixels.max())
    if meta["constant"]:
        # A uniform image carries no anatomy; zeros keep every later normalisation finite.
        pixels = np.zeros_like(pixels)
    elif meta.get("format") in FLAT_RUN_FORMATS:
        check_flat_runs(pixels, label)
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    np.clip(
        pixels, 0.0, 1.0, out=pixels
    )  # in place: another full-size copy would raise peak memory
    return LoadedImage(pixels=pixels, name=label, meta=meta, stored=stored)


def _exception_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``struct.error`` otherwise: a bare ``error`` says nothing."""
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _decode(
    data: bytes, label: str, suffix: str, limits: ImageLimits
) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Gray pixels, metadata and full-depth stored values, choosing the decoder from the content."""
    if has_dicom_marker(data):
        return load_dicom(data, label, limits, force=False, suffix=suffix)
    opened = open_pil(data, label, limits)
    if opened is not None:
        return (*load_pil(opened, data, label, limits), None)
    if suffix in DICOM_EXTENSIONS or looks_like_raw_dicom(data):
        return load_dicom(data, label, limits, force=True, suffix=suffix)
    raise ImageLoadError(not_an_image_message(data, label))
