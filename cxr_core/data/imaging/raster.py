"""PNG, JPEG, BMP and TIFF through Pillow, reduced to one gray plane as early as the format allows.

Only the plugins of the supported formats may open a file, so a file Pillow could read through
some other plugin is refused by name instead of being decoded by code nobody tested here.
"""

from __future__ import annotations

import io
import struct
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cxr_core.data.imaging.integrity import check_jpeg_data
from cxr_core.data.imaging.limits import ImageLimits, check_decoded_bytes, check_pixel_count
from cxr_core.data.imaging.scale import min_max
from cxr_core.data.imaging.truncation import PNG_CHANNELS, jpeg_shortfall, png_shortfall
from cxr_core.errors import ImageLoadError

_PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # JPEG also yields MPO (camera JPEGs)


_FORMAT_NAMES = {"MPO": "JPEG"}  # multi-picture JPEGs from cameras: frame 0 is the picture


_DETECTOR_BITS = (8, 10, 12, 14, 16)


def open_pil(data: bytes, label: str, limits: ImageLimits) -> Image.Image | None:
    """Open (header only) with the allowed plugins; ``None`` when no plugin recognises it."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning is replaced by the explicit ImageLimits check below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_PIL_FORMATS)
    except UnidentifiedImageError:
        return None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(
            f"{label}: the image header declares more pixels than can be decoded safely "
            f"({exc}). Downscale the image."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for broken headers
        raise ImageLoadError(
            f"{label}: the image header is damaged ({exc}). Re-export the image."
        ) from exc
    check_pixel_count(image.width, image.height, label, limits)
    return image


def load_pil(
    image: Image.Image, data: bytes, label: str, limits: ImageLimits
) -> tuple[np.ndarray, dict]:
    fmt = _FORMAT_NAMES.get(image.format or "", image.format or "unknown")
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":
        raise ImageLoadError(
            f"{label}: the {fmt} file holds {frames} pages/frames; save the single radiograph on its own."
        )
    file_mode = image.mode
    if fmt == "JPEG" and image.mode == "RGB":
        # libjpeg then outputs the luma plane directly: 1 byte per pixel instead of 4.
        image.draft("L", None)
    channels, sample_bytes = _decoded_layout(image, data)
    check_decoded_bytes(
        image.width, image.height, channels, sample_bytes, f"{fmt} {file_mode}", label, limits
    )
    try:
        image.load()  # full decode: a truncated file fails here instead of yielding gray rows
        if image.format == "PNG":
            # Pillow accepts a PNG cut after its last image chunk; verify() walks every CRC to IEND.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.open(io.BytesIO(data), formats=["PNG"]).verify()
        orientation = int(image.getexif().get(0x0112, 1) or 1)
        transposed = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, struct.error, zlib errors...
        raise ImageLoadError(
            f"{label}: the {fmt} file is damaged or truncated ({exc}). Re-export or re-upload it."
        ) from exc
    missing = (
        png_shortfall(data)
        if fmt == "PNG"
        else jpeg_shortfall(data, np.asarray(image))
        if fmt == "JPEG"
        else None
    )
    if missing:
        raise ImageLoadError(
            f"{label}: the {fmt} file is truncated: {missing}. The decoder would fill the missing part "
            "with black or gray; re-export or re-upload the image."
        )
    if fmt == "JPEG":
        check_jpeg_data(data, label)
    if transposed is not image:
        image.close()  # free the stored orientation's pixels before converting the displayed one
    image = transposed
    check_pixel_count(image.width, image.height, label, limits)

    meta: dict[str, Any] = {
        "format": fmt,
        "mode": file_mode,
        "bit_depth": _pil_bit_depth(image.mode),
        "size": [image.width, image.height],
        "orientation": orientation,
    }
    pixels, scaling = _pil_to_gray(image, data, fmt, label)
    meta.update(scaling)
    return pixels, meta


def _decoded_layout(image: Image.Image, data: bytes) -> tuple[int, int]:
    """(channels, bytes per sample) that decoding ``image`` produces, from the file's own header
    where Pillow's mode hides it (a 16-bit RGBA PNG is decoded from 8 bytes per pixel)."""
    if image.format == "PNG" and len(data) >= 29 and data[12:16] == b"IHDR":
        depth, color = data[24], data[25]
        return PNG_CHANNELS.get(color, len(image.getbands())), 2 if depth == 16 else 1
    mode = image.mode
    sample_bytes = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return len(image.getbands()), sample_bytes


def _pil_bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _pil_to_gray(image: Image.Image, data: bytes, fmt: str, label: str) -> tuple[np.ndarray, dict]:
    """Gray float32 in [0, 1] and a description of how values were scaled.

    8-bit colour is reduced to 8-bit planes with Pillow (its "L" conversion uses the BT.601
    weights) and ``image`` is closed before the float image is made, so a colour file costs
    one float32 plane more than its decode, not float64 per channel.
    """
    mode = image.mode
    if mode in ("P", "PA"):
        image, mode = image.convert("RGBA"), "RGBA"  # palette may carry transparency (tRNS)
    if mode in ("CMYK", "YCbCr"):
        image, mode = image.convert("RGB"), "RGB"

    if mode == "1":
        return np.asarray(image, dtype=np.float32), {"scale": "bilevel"}
    if mode in ("L", "LA", "La", "RGB", "RGBX", "RGBA", "RGBa"):
        gray = np.asarray(
            image
            if mode == "L"
            else image.getchannel("L")
            if mode.startswith("L")
            else image.convert("L")
        )
        alpha = np.asarray(image.getchannel("A")) if mode in ("LA", "RGBA") else None
        image.close()
        pixels = gray.astype(np.float32)
        del gray
        if alpha is None:
            pixels *= np.float32(1.0 / 255.0)
            return pixels, {"scale": "divided by 255"}
        # Transparent areas lie outside the exposed film, which a viewer shows black;
        # compositing on white would make them look like dense bone.
        pixels *= alpha
        pixels *= np.float32(1.0 / (255.0 * 255.0))
        return pixels, {"scale": "divided by 255", "alpha": "composited on black"}
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image)
        low, high = float(arr.min()), float(arr.max())
        if low < 0 or high > 65535:
            return min_max(arr), {"scale": "min-max (values outside 0..65535)"}
        bits, source = _significant_bits(data, fmt, high)
        pixels = arr.astype(np.float32)  # exact: 16-bit integers fit float32's 24-bit mantissa
        pixels *= np.float32(1.0 / float(2**bits - 1))
        return pixels, {
            "scale": f"divided by {2**bits - 1}",
            "bits_stored": bits,
            "bits_source": source,
        }
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageLoadError(
                f"{label}: the floating-point image contains NaN or infinite values."
            )
        if arr.min() >= 0.0 and arr.max() <= 1.0:
            return arr, {"scale": "float already in 0..1"}
        return min_max(arr), {"scale": "min-max"}
    raise ImageLoadError(
        f"{label}: the {fmt} pixel mode '{image.mode}' is not supported; save it as 8- or 16-bit "
        "grayscale or RGB."
    )


def _significant_bits(data: bytes, fmt: str, high: float) -> tuple[int, str]:
    """How many bits of a 16-bit container the detector really used.

    Radiographs are commonly 10-, 12- or 14-bit detector data stored in 16 bits. Dividing
    12-bit data by 65535 would show it at under 7% brightness (almost black), while dividing
    by each image's own maximum would brighten every exposure differently, so images of one
    detector would stop being comparable. A PNG ``sBIT`` chunk states the depth exactly; without
    it the smallest usual detector depth (8/10/12/14/16) that holds the brightest pixel is used,
    which is stable across images from one source.
    """
    if fmt == "PNG":
        declared = _png_sbit(data)
        if declared and 1 <= declared <= 16 and high <= 2**declared - 1:
            return declared, "PNG sBIT chunk"
    for bits in _DETECTOR_BITS:
        if high <= 2**bits - 1:
            return bits, "smallest detector depth holding the maximum"
    return 16, "container"


def _png_sbit(data: bytes) -> int | None:
    """Read the PNG sBIT chunk (significant bits), which Pillow does not expose."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"sBIT":
            return data[pos + 8] if length >= 1 and pos + 9 <= len(data) else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None
