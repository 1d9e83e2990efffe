"""Corrupt scans: pixel data a decoder returned without an error, but damaged on the way.

Decoders are lenient where a radiograph must not be. One flipped bit in a JPEG's entropy-coded
data desynchronises libjpeg, which then fills the rest of the image with saturated blocks
(176 white rows out of 224 turned a normal pediatric film into "Pneumonia 0.80") and only
emits a warning that Pillow discards. Two checks refuse such files:

- :func:`jpeg_corruption`: the same data decoded by libjpeg-turbo with warnings raised
  (``simplejpeg``'s strict mode); "Corrupt JPEG data", "Premature end of JPEG file" and
  "Inconsistent progression" name damaged entropy-coded data. Other warnings (an unknown JFIF
  revision) describe harmless header quirks and are let through.
- :func:`check_flat_runs`: a run of flat rows (or columns) of one value *inside* the image,
  with content on both sides, of at least :data:`MIN_INTERIOR_RUN_FRACTION` of the image: what
  zeroed or desynchronised data leaves where nothing else would tell, in the formats without a
  checksum or a decoder that reports damage (DICOM, whose native pixel data has neither, BMP and
  TIFF; :data:`FLAT_RUN_FORMATS`). PNG carries CRCs and a zlib checksum, and JPEG has the check
  above, so a PNG drawing with flat bands (a synthetic test image) is left alone. Detector
  noise makes every row of a real film vary, so such a band is damage, or a synthetic image
  (a document, a test pattern) that is no radiograph either. Flat bands touching an edge are
  how films are padded to a square or letterboxed (up to 40% of the rows of some NIH films),
  so they never count.

Measured on every real image in the shared data (2,074 NIH, 5,216 Kermany, 905 COVID-19, 138
Montgomery): no strict-mode warning on any real JPEG and no interior flat run longer than 1 row
or 16 columns of 224 (7%); see ``tests/reliability/test_corrupt_scans.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import simplejpeg

from cxr_core.errors import CorruptImageError

logger = logging.getLogger(__name__)

MIN_INTERIOR_RUN_FRACTION = 1 / 8
MIN_INTERIOR_RUN = 8  # pixels: below this a flat band is too thin to change what a model sees
FLAT_RUN_FORMATS = frozenset({"DICOM", "BMP", "TIFF"})
_CORRUPTION_WARNINGS = (
    "Corrupt JPEG data",
    "Premature end of JPEG file",
    "Inconsistent progression",
)


def jpeg_corruption(data: bytes) -> str | None:
    """libjpeg-turbo's warning about damaged scan data in ``data``, or ``None``.

    A file the strict decoder refuses but the lenient one decodes had only a warning; a file
    neither decodes (12-bit, lossless, arithmetic-coded) is judged by the caller's decoder.
    """
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
        return None
    except ValueError as exc:
        message = str(exc)
    if not message.startswith(_CORRUPTION_WARNINGS):
        logger.debug("JPEG decoder message not taken as corruption: %s", message)
        return None
    return message


def interior_flat_run(pixels: np.ndarray) -> tuple[int, int, float]:
    """(first row, end row, value) of the longest run of flat rows of one value that has
    content above and below; ``(0, 0, 0.0)`` when there is none."""
    flat = pixels.min(axis=1) == pixels.max(axis=1)
    if not flat.any():
        return 0, 0, 0.0
    values = pixels[:, 0]
    same = np.r_[False, flat[1:] & flat[:-1] & (values[1:] == values[:-1])]
    starts = np.flatnonzero(flat & ~same)
    best = (0, 0, 0.0)
    for start in starts:
        end = start + 1
        while end < len(flat) and same[end]:
            end += 1
        if start > 0 and end < len(flat) and end - start > best[1] - best[0]:
            best = (int(start), int(end), float(values[start]))
    return best


def check_flat_runs(pixels: np.ndarray, label: str) -> None:
    """Refuse an image with a long flat band inside it (see the module docstring)."""
    for axis, along in ((0, "rows"), (1, "columns")):
        lines = pixels if axis == 0 else pixels.T
        start, end, value = interior_flat_run(lines)
        if end - start >= max(MIN_INTERIOR_RUN, MIN_INTERIOR_RUN_FRACTION * len(lines)):
            raise CorruptImageError(
                f"{label}: {along} {start + 1}-{end} of {len(lines)} are one flat value ({value:.2f}) "
                "inside the image. A radiograph carries noise in every row and column, so this is "
                "pixel data damaged in storage or transfer, or not a radiograph (a drawing, a "
                "document, a test pattern). Re-export the image from the source."
            )


def check_jpeg_data(data: bytes, label: str) -> None:
    """Refuse JPEG data whose decoder warned about damage (see :func:`jpeg_corruption`)."""
    warning = jpeg_corruption(data)
    if warning:
        raise CorruptImageError(
            f"{label}: the JPEG data is damaged (decoder: {warning.rstrip('.')}); the decoder would "
            "fill the damaged part with flat or shifted blocks. Re-export or re-upload the image."
        )
