"""Reading any radiograph file (PNG, JPEG, BMP, TIFF, DICOM) into one float image.

Every other module (cache building, prediction, the dashboard upload) goes through
:func:`load_image`, so that a radiograph looks the same wherever it is read: gray, float32 in
[0, 1], bright = dense (bone white as a reader sees it on a light box).

The package follows the way a file is read:

- ``sniff``: what a file is, from its first bytes (never its name): exports are often misnamed
  and PACS writes DICOM files without extension;
- ``limits``: bytes, pixels and decoded size bounded before any decoder runs, so a hostile or
  broken upload cannot exhaust memory;
- ``raster`` (PNG/JPEG/BMP/TIFF through Pillow) and ``dicom`` (+ ``dicom_voi``), each reducing
  the image to one gray plane as early as its format allows;
- ``truncation`` and ``integrity``: decoders are lenient where a radiograph must not be
  (libjpeg and zlib fill missing rows and only warn, pydicom masks values that do not fit
  BitsStored), so short, damaged or desynchronised pixel data is refused here instead of scored;
- ``loader``: :func:`load_image` and :class:`LoadedImage`.
"""

from cxr_core.data.imaging.limits import ImageLimits
from cxr_core.data.imaging.loader import LoadedImage, load_image
from cxr_core.data.imaging.scale import scale_by_stored_bits
from cxr_core.data.imaging.sniff import (
    SNIFF_BYTES,
    SUPPORTED_EXTENSIONS,
    SUPPORTED_KINDS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_KINDS,
    sniff_kind,
)

__all__ = [
    "SNIFF_BYTES",
    "SUPPORTED_EXTENSIONS",
    "SUPPORTED_KINDS",
    "UNSUPPORTED_IMAGE_EXTENSIONS",
    "UNSUPPORTED_IMAGE_KINDS",
    "ImageLimits",
    "LoadedImage",
    "load_image",
    "scale_by_stored_bits",
    "sniff_kind",
]
