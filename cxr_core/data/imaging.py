"""Reading any radiograph file (PNG, JPEG, BMP, TIFF, DICOM) into one float image.

Every other module (cache building, prediction, the dashboard upload) goes through
``load_image`` so that a radiograph looks the same wherever it is read: gray, float32 in
[0, 1], bright = dense (bone white as a reader sees it on a light box).

The format is taken from the file's content, not its name, because exported radiographs are
often misnamed (a PNG called ``.jpg``, a DICOM without extension). Limits on bytes and pixels
are checked before any decoding so that a hostile or broken upload cannot exhaust memory, and
images are reduced to one 8/16-bit gray plane as early as the format allows, so that memory
follows the pixel count rather than the colour layout.

Decoders are lenient where a radiograph must not be: libjpeg and zlib fill rows missing from a
truncated file with black or gray and only warn, and pydicom masks values that do not fit
BitsStored. A file whose pixel data is shorter than its header claims, or whose values do not
fit its declared bit depth, is therefore checked and refused here instead of being scored.
Every failure, including any exception a decoder library raises, is an ``ImageLoadError``
naming the file and what to do.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.encaps import generate_frames
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_windowing,
    get_decoder,
)
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

from cxr_core.errors import ImageLoadError

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ""})
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # JPEG also yields MPO (camera JPEGs)
_FORMAT_NAMES = {"MPO": "JPEG"}  # multi-picture JPEGs from cameras: frame 0 is the picture
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights Pillow's "L" conversion uses
_DETECTOR_BITS = (8, 10, 12, 14, 16)
_HELP_FORMATS = "Supported formats: PNG, JPEG, BMP, TIFF and DICOM."
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
# Huffman-coded JPEG processes, whose decoders fill a short scan with zeros instead of failing.
_DICOM_JPEG_SYNTAXES = frozenset(
    {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}
)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel
_PNG_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
# Names of image formats that exist but are refused, so that a folder listing can give them
# a row with the reason instead of skipping them silently.
UNSUPPORTED_IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".gif", ".webp", ".jp2", ".j2k", ".jpx", ".jpf", ".heic", ".heif", ".avif", ".jxl"}
)


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds checked before decoding, so a decompression bomb is refused cheaply.

    ``max_decoded_bytes`` bounds what the decoder itself must hold (pixels x channels x bytes
    per sample): a pixel limit alone lets a 16-bit RGBA file decode to 8 bytes per pixel. The
    default admits an 8-bit RGBA image at the full pixel limit (240 MB).
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 60_000_000
    max_decoded_bytes: int = 256 * 1024 * 1024


@dataclass
class LoadedImage:
    """A radiograph as float32 (H, W) in [0, 1], 1.0 = brightest, plus JSON-safe metadata."""

    pixels: np.ndarray
    name: str
    meta: dict[str, Any] = field(default_factory=dict)


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    name: str | None = None,
    limits: ImageLimits = ImageLimits(),
) -> LoadedImage:
    """Read a radiograph from a path or from raw bytes (dashboard uploads pass ``name``).

    Raises ``ImageLoadError`` for anything that is not a single readable 2-D radiograph within
    ``limits``; the message starts with the file name.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "uploaded image"
        suffix = Path(label).suffix.lower()
        data = bytes(source)
        _check_byte_count(len(data), label, limits)
    elif isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        suffix = Path(source).suffix.lower()
        data = _read_file(Path(source), label, limits)
    else:
        raise TypeError(f"load_image expects a path or bytes, got {type(source).__name__}")

    try:
        pixels, meta = _decode(data, label, suffix, limits)
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
    if not pixels.flags.writeable:
        pixels = pixels.copy()
    np.clip(
        pixels, 0.0, 1.0, out=pixels
    )  # in place: another full-size copy would raise peak memory
    return LoadedImage(pixels=pixels, name=label, meta=meta)


def _exception_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``struct.error`` otherwise: a bare ``error`` says nothing."""
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _decode(data: bytes, label: str, suffix: str, limits: ImageLimits) -> tuple[np.ndarray, dict]:
    """Gray pixels and metadata, choosing the decoder from the content."""
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _load_dicom(data, label, limits, force=False, suffix=suffix)
    opened = _open_pil(data, label, limits)
    if opened is not None:
        return _load_pil(opened, data, label, limits)
    if suffix in _DICOM_EXTENSIONS or _looks_like_raw_dicom(data):
        return _load_dicom(data, label, limits, force=True, suffix=suffix)
    raise ImageLoadError(_not_an_image_message(data, label))


# --------------------------------------------------------------------------- reading bytes


def _read_file(path: Path, label: str, limits: ImageLimits) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise ImageLoadError(
                f"{label}: is a symbolic link to {os.readlink(path)}, which does not exist (a dangling "
                "link). Fix the link or copy the image itself."
            ) from exc
        raise ImageLoadError(
            f"{label}: file not found. Check the path or re-upload the image."
        ) from exc
    except OSError as exc:
        raise ImageLoadError(f"{label}: cannot be accessed ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(f"{label}: is a folder, not an image file.")
    if not stat.S_ISREG(info.st_mode):
        # Opening a named pipe or a device would block or read without end.
        raise ImageLoadError(
            f"{label}: is a {_file_kind(info.st_mode)}, not a regular file; only image files can be read."
        )
    _check_byte_count(info.st_size, label, limits)
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise ImageLoadError(f"{label}: cannot be read ({exc.strerror or exc}).") from exc
    _check_byte_count(len(data), label, limits)
    return data


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _check_byte_count(size: int, label: str, limits: ImageLimits) -> None:
    if size == 0:
        raise ImageLoadError(
            f"{label}: the file is empty (0 bytes); the export or upload did not complete."
        )
    if size > limits.max_bytes:
        raise ImageLoadError(
            f"{label}: the file is {_size_text(size)}, over the {_size_text(limits.max_bytes)} limit. "
            "Export a smaller image or raise ImageLimits.max_bytes."
        )


def _check_pixel_count(width: int, height: int, label: str, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            f"{label}: the image is {width}x{height} = {width * height:,} pixels, over the "
            f"{limits.max_pixels:,} pixel limit (possible decompression bomb). "
            "Downscale the image or raise ImageLimits.max_pixels."
        )


def _check_decoded_bytes(
    width: int,
    height: int,
    channels: int,
    sample_bytes: int,
    what: str,
    label: str,
    limits: ImageLimits,
) -> None:
    decoded = width * height * channels * sample_bytes
    if decoded > limits.max_decoded_bytes:
        raise ImageLoadError(
            f"{label}: decoding the {width}x{height} {what} image would take {_size_text(decoded)} "
            f"({channels} channel(s) x {sample_bytes} byte(s) per sample), over the "
            f"{_size_text(limits.max_decoded_bytes)} limit on decoded data. Save it as grayscale, "
            "downscale it, or raise ImageLimits.max_decoded_bytes."
        )


def _size_text(size: int) -> str:
    return f"{size:,} bytes" if size < 1024 * 1024 else f"{size / (1024 * 1024):.1f} MB"


def _looks_like_raw_dicom(data: bytes) -> bool:
    """A DICOM written without preamble starts with a little-endian group 0002 or 0008 tag."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00") and data[3:4] == b"\x00"


def _not_an_image_message(data: bytes, label: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Image.open(io.BytesIO(data)).format
    except Exception:  # noqa: BLE001 - any failure just means "not an image Pillow knows"
        other = None
    if other:
        return f"{label}: is a {other} image, which is not supported. {_HELP_FORMATS}"
    head = data[:64]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        kind = "text, not an image"
    else:
        for signature, fmt in _SIGNATURES:
            if data.startswith(signature):
                # Pillow reports a header it cannot parse as "not identified"; the magic bytes
                # show it is a damaged file of a supported format, not a misnamed one.
                return (
                    f"{label}: starts like a {fmt} file but its header cannot be read; the file is "
                    "damaged or truncated. Re-export or re-upload it."
                )
        kind = "not a recognised image"
    return f"{label}: the content is {kind} (the file name may be wrong). {_HELP_FORMATS}"


# --------------------------------------------------------------------------- PNG/JPEG/BMP/TIFF


def _open_pil(data: bytes, label: str, limits: ImageLimits) -> Image.Image | None:
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
    _check_pixel_count(image.width, image.height, label, limits)
    return image


def _load_pil(
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
    _check_decoded_bytes(
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
        _png_shortfall(data)
        if fmt == "PNG"
        else _jpeg_shortfall(data, np.asarray(image))
        if fmt == "JPEG"
        else None
    )
    if missing:
        raise ImageLoadError(
            f"{label}: the {fmt} file is truncated: {missing}. The decoder would fill the missing part "
            "with black or gray; re-export or re-upload the image."
        )
    if transposed is not image:
        image.close()  # free the stored orientation's pixels before converting the displayed one
    image = transposed
    _check_pixel_count(image.width, image.height, label, limits)

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
        return _PNG_CHANNELS.get(color, len(image.getbands())), 2 if depth == 16 else 1
    mode = image.mode
    sample_bytes = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return len(image.getbands()), sample_bytes


def _png_shortfall(data: bytes) -> str | None:
    """How much image data a PNG lacks, or ``None`` when its zlib stream holds every row.

    zlib stops cleanly at the end of a complete but short stream, and Pillow then leaves the
    undecoded rows black; only counting the decompressed bytes shows it. Decompression is
    streamed in 1 MB steps so the check costs no memory.
    """
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = _PNG_CHANNELS.get(color)
    if channels is None:
        return None
    passes = (
        [
            ((height - y0 + dy - 1) // dy, (width - x0 + dx - 1) // dx)
            for x0, y0, dx, dy in _PNG_ADAM7
        ]
        if interlace
        else [(height, width)]
    )
    expected = sum(
        rows * (1 + (cols * channels * depth + 7) // 8) for rows, cols in passes if rows and cols
    )
    stream, got, pos, view = zlib.decompressobj(), 0, 8, memoryview(data)
    while pos + 8 <= len(data) and got < expected and not stream.eof:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            pending = view[pos + 8 : pos + 8 + length]
            while pending and got < expected and not stream.eof:
                got += len(stream.decompress(pending, 1 << 20))
                pending = stream.unconsumed_tail
        pos += 12 + length
    if got >= expected:
        return None
    if not interlace:
        row_bytes = 1 + (width * channels * depth + 7) // 8
        return (
            f"its header (IHDR) declares {height:,} rows but the image data holds {got // row_bytes:,} "
            f"({got:,} of {expected:,} bytes)"
        )
    return f"its interlaced image data holds {got:,} of the {expected:,} bytes its header (IHDR) declares"


def _jpeg_shortfall(data: bytes, reference: np.ndarray | None = None) -> str | None:
    """Whether a JPEG's scans end before the rows its frame header declares.

    libjpeg decodes a scan that runs out of data (cut file, EOI or another marker too early,
    SOF claiming more rows) by filling the remaining blocks with zeros, with only a warning
    that Pillow does not expose. Junk placed where each scan's data ends tells the cases
    apart: a complete scan never reads it, a short scan decodes it into the missing blocks.
    ``reference`` is the file's own decode when the caller has it (as ``_jpeg_pixels`` makes
    it); the comparison is at full size, because a scan that runs out within the last
    blocks' high frequencies changes nothing a scaled-down decode shows.
    """
    spliced = _jpeg_with_scan_junk(data)
    if spliced is None:
        return None
    if reference is None:
        reference = _jpeg_pixels(data)
    try:
        probe = _jpeg_pixels(spliced)
    except Exception:  # noqa: BLE001 - junk was decoded into the image: its scan was short
        probe = None
    if probe is not None and np.array_equal(reference, probe):
        return None
    return "its scan data ends before all the rows its frame header (SOF) declares have been coded"


_SCAN_JUNK = bytes(range(1, 255)) * 4  # no 0xFF, so the junk cannot form a marker


def _jpeg_with_scan_junk(data: bytes) -> bytes | None:
    """``data`` with junk inserted after each scan's entropy-coded data; ``None`` if unparsable."""
    out, pos, scans = bytearray(data[:2]), 2, 0
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            out.append(0xFF)
            pos += 1
            continue
        if marker == 0xD9:
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: markers without a length
            out += data[pos : pos + 2]
            pos += 2
            continue
        segment_end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out += data[pos:segment_end]
        pos = segment_end
        if marker == 0xDA:
            end = data.find(b"\xff", pos)
            while (
                end != -1
                and end + 1 < len(data)
                and (data[end + 1] == 0x00 or 0xD0 <= data[end + 1] <= 0xD7)
            ):
                end = data.find(b"\xff", end + 2)
            end = len(data) if end == -1 else end
            out += data[pos:end] + _SCAN_JUNK
            pos, scans = end, scans + 1
    if not scans:
        return None
    out += data[pos:]
    return bytes(out)


def _jpeg_pixels(data: bytes) -> np.ndarray:
    """Decode as ``_load_pil`` does (RGB straight to luma), for comparison with its result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            if image.mode == "RGB":
                image.draft("L", None)
            image.load()
            return np.asarray(image)


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
            return _min_max(arr), {"scale": "min-max (values outside 0..65535)"}
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
        return _min_max(arr), {"scale": "min-max"}
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


def _min_max(arr: np.ndarray) -> np.ndarray:
    return _scale_between(arr, float(arr.min()), float(arr.max()))


# --------------------------------------------------------------------------- DICOM


def _load_dicom(
    data: bytes, label: str, limits: ImageLimits, *, force: bool, suffix: str
) -> tuple[np.ndarray, dict]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pydicom warns about non-conformant files
            ds = pydicom.dcmread(io.BytesIO(data), force=force)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types
        raise ImageLoadError(
            f"{label}: unreadable DICOM file ({exc}). It may be damaged or incomplete; re-export it."
        ) from exc
    if force and not any(k in ds for k in ("PixelData", "Rows", "SOPClassUID", "Modality")):
        if suffix in (".dcm", ".dicom"):
            raise ImageLoadError(
                f"{label}: is named like a DICOM file but has no DICOM header (no 'DICM' marker and "
                "no readable elements). It may be damaged or not a DICOM file; re-export it."
            )
        raise ImageLoadError(_not_an_image_message(data, label))

    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageLoadError(
            f"{label}: the DICOM file contains no pixel data (no image); it may be a report, "
            "a presentation state or a DICOMDIR. Export the image series instead."
        )
    frames = _int_or(ds.get("NumberOfFrames"), 1)
    if frames > 1:
        raise ImageLoadError(
            f"{label}: the DICOM file is multi-frame ({frames} frames); only single-frame "
            "radiographs are supported. Export the frame you want as its own file."
        )
    rows, cols = _int_or(ds.get("Rows"), 0), _int_or(ds.get("Columns"), 0)
    if rows <= 0 or cols <= 0:
        raise ImageLoadError(
            f"{label}: the DICOM header has no valid Rows/Columns ({rows}x{cols})."
        )
    _check_pixel_count(cols, rows, label, limits)
    samples = max(1, _int_or(ds.get("SamplesPerPixel"), 1))
    allocated = _int_or(ds.get("BitsAllocated"), 16)
    _check_decoded_bytes(cols, rows, samples, max(1, (allocated + 7) // 8), "DICOM", label, limits)

    syntax = _transfer_syntax(ds, label)
    _require_decoder(syntax, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # Unmasked values, so that data wider than BitsStored is seen instead of turned into noise.
            ds.pixel_array_options(correct_unused_bits=False)
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise many types
        raise ImageLoadError(
            f"{label}: the DICOM pixel data ({syntax.name}) could not be decoded ({exc}). "
            "The file may be truncated or damaged; re-export it."
        ) from exc
    if arr.ndim not in (2, 3) or arr.shape[:2] != (rows, cols):
        raise ImageLoadError(f"{label}: unexpected DICOM pixel array shape {arr.shape}.")
    if syntax in _DICOM_JPEG_SYNTAXES:
        _check_jpeg_frame(ds, label)
    arr = _fit_bits_stored(arr, ds, label)

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    meta: dict[str, Any] = {
        "format": "DICOM",
        "mode": photometric,
        "bit_depth": _int_or(ds.get("BitsStored"), arr.dtype.itemsize * 8),
        "size": [cols, rows],
        "orientation": 1,
        "photometric_interpretation": photometric,
        "transfer_syntax": syntax.name,
        "preamble": not force,
    }
    for key, keyword in (
        ("view_position", "ViewPosition"),
        ("patient_id", "PatientID"),
        ("modality", "Modality"),
        ("body_part", "BodyPartExamined"),
        ("study_date", "StudyDate"),
        ("patient_age", "PatientAge"),
        ("patient_sex", "PatientSex"),
    ):
        meta[key] = _json_safe(ds.get(keyword))

    if photometric.startswith("MONOCHROME"):
        pixels = _dicom_monochrome(arr, ds, meta, label)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 stores bone dark; display convention is bone white.
            np.subtract(1.0, pixels, out=pixels)
        meta["inverted"] = photometric == "MONOCHROME1"
    elif photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        pixels = (rgb[..., :3] @ _LUMA) / float(np.iinfo(rgb.dtype).max)
        meta["voi"] = "palette lookup"
    elif arr.ndim == 3 and arr.shape[2] == 3:
        # pydicom returns RGB for RGB and YBR_* encodings alike.
        bits = _int_or(ds.get("BitsStored"), 8)
        pixels = (arr.astype(np.float64) @ _LUMA) / float(2**bits - 1)
        meta["voi"] = "color to luma"
    else:
        raise ImageLoadError(
            f"{label}: DICOM photometric interpretation '{photometric}' is not supported."
        )
    return pixels, meta


def _dicom_monochrome(
    arr: np.ndarray, ds: pydicom.Dataset, meta: dict[str, Any], label: str
) -> np.ndarray:
    """Modality LUT (rescale), then the file's own VOI LUT or window, else min-max."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        meta["rescale"] = {
            "slope": _json_safe(ds.get("RescaleSlope", 1)),
            "intercept": _json_safe(ds.get("RescaleIntercept", 0)),
        }
    values = apply_modality_lut(arr, ds)
    if np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values)):
        values = values.astype(np.int64)  # VOI LUTs index by integer values

    lut_items = ds.get("VOILUTSequence")
    if lut_items and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]:
        mapped, lut = _apply_voi_lut(values, lut_items[0], ds, label)
        meta["voi"] = "VOI LUT"
        # The LUT's own entries define its output range; the descriptor's bit count is often wrong.
        return _scale_between(mapped, float(lut.min()), float(lut.max()))

    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            mapped = _by_row_blocks(lambda block: apply_windowing(block, ds, 0), values)
            with np.errstate(over="ignore"):
                low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, 0)
        except (ValueError, TypeError, IndexError) as exc:
            meta["voi"] = f"min-max (window ignored: {exc})"
            return _min_max(values)
        meta["voi"] = "window"
        meta["window"] = {
            "center": _first(ds.WindowCenter),
            "width": _first(ds.WindowWidth),
            "function": str(ds.get("VOILUTFunction", "LINEAR")),
        }
        return _scale_between(mapped, float(low), float(high))

    pixels, meta["voi"] = scale_by_stored_bits(
        values.astype(np.float32, copy=False), _int_or(ds.get("BitsStored"), 16)
    )
    return pixels


def scale_by_stored_bits(values: np.ndarray, bits: int) -> tuple[np.ndarray, str]:
    """The intensity rule for images without a window: divide by the largest value the stored bit
    depth can hold (``2**bits - 1``), as for PNG/TIFF, so the same pixels score the same in either
    format; values outside that range (a rescale to signed units) fall back to min-max."""
    top = float(2 ** max(1, min(int(bits), 32)) - 1)
    if values.size and float(values.min()) >= 0.0 and float(values.max()) <= top:
        return values / top, f"divided by {int(top)} (stored bit depth)"
    return _min_max(values), "min-max (values outside the stored bit depth)"


def _apply_voi_lut(
    values: np.ndarray, item: pydicom.Dataset, ds: pydicom.Dataset, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """(mapped values as float32, the LUT's entries): PS3.3 C.11.2.1.1 applied directly.

    pydicom's ``apply_voi`` indexes 8-bit LUTs through a uint8 array (entries beyond 255 wrap
    into garbage) and fails with a raw ``struct.error`` on a LUT shorter than its descriptor,
    so the lookup is done here: inputs below the first mapped value take the first entry,
    inputs past the last take the last.
    """
    descriptor = item.get("LUTDescriptor")
    descriptor = (
        list(descriptor)
        if isinstance(descriptor, (list, pydicom.multival.MultiValue))
        else [descriptor]
    )
    if len(descriptor) != 3 or any(not isinstance(v, int) for v in descriptor):
        raise ImageLoadError(
            f"{label}: the VOI LUT descriptor is {descriptor}; it must hold 3 numbers (entries, first "
            "mapped value, bits per entry). The file is damaged; re-export it."
        )
    count, first, bits = descriptor
    count = count or 65536  # PS3.3: 0 entries means 2^16
    if ds.get("PixelRepresentation", 0) == 1 and first >= 2**15:
        first -= 2**16  # a US-encoded first value for signed pixels
    if not 1 <= bits <= 16:
        raise ImageLoadError(
            f"{label}: the VOI LUT declares {bits} bits per entry; only 1..16 are possible."
        )
    lut = _lut_entries(item, ds, count, bits)
    if lut.size < count:
        raise ImageLoadError(
            f"{label}: the VOI LUT holds {lut.size:,} entries but its descriptor declares {count:,}; "
            "the file is damaged or truncated. Re-export it."
        )
    lut = lut[:count]
    index = (
        np.rint(values).astype(np.int64)
        if np.issubdtype(values.dtype, np.floating)
        else values.astype(np.int64)
    )
    index -= first
    np.clip(index, 0, count - 1, out=index)
    return lut.astype(np.float32)[index], lut  # entries are at most 16-bit: exact in float32


def _by_row_blocks(func: Any, values: np.ndarray) -> np.ndarray:
    """An elementwise pydicom transform applied a few million pixels at a time into float32.

    ``apply_windowing`` works in float64 with several full-size temporaries (about 25 bytes
    per pixel); by blocks of rows the temporaries stay small and the result costs 4 bytes.
    """
    out = np.empty(values.shape, np.float32)
    step = max(1, (1 << 22) // max(1, int(np.prod(values.shape[1:]))))
    for start in range(0, values.shape[0], step):
        out[start : start + step] = func(values[start : start + step])
    return out


def _lut_entries(item: pydicom.Dataset, ds: pydicom.Dataset, count: int, bits: int) -> np.ndarray:
    """The LUT Data as integers, however it is encoded.

    OW data holds 16-bit words, except that 8-bit entries may be packed two per word (low byte
    first); US data is one value per entry, or, from some writers, packed 8-bit pairs too.
    """
    data = item.LUTData
    if data is None:
        return np.zeros(0, np.int64)
    if isinstance(data, (bytes, bytearray)):
        if bits == 8 and len(data) in (count, count + 1):
            return np.frombuffer(data[:count], np.uint8).astype(np.int64)
        little = ds.original_encoding[1] is not False
        return np.frombuffer(data[: len(data) // 2 * 2], "<u2" if little else ">u2").astype(
            np.int64
        )
    words = np.asarray(
        list(data) if isinstance(data, (list, pydicom.multival.MultiValue)) else [data],
        dtype=np.int64,
    )
    if (
        bits == 8
        and words.size < count
        and words.size == (count + 1) // 2
        and words.max(initial=0) > 255
    ):
        return words.astype("<u2").view(np.uint8).astype(np.int64)
    return words


def _fit_bits_stored(arr: np.ndarray, ds: pydicom.Dataset, label: str) -> np.ndarray:
    """Check that the decoded values fit BitsStored and give them their signed meaning.

    Masking the bits above BitsStored (what pydicom does by default) turns 12-bit data in a
    file that claims 8 bits into noise, so such a file is refused instead. Signed data whose
    unused high bits are zero rather than sign-extended is sign-extended here.
    """
    stored, allocated = _int_or(ds.get("BitsStored"), 0), arr.dtype.itemsize * 8
    if not np.issubdtype(arr.dtype, np.integer) or not 0 < stored < allocated:
        return arr
    unsigned = arr.view(arr.dtype.str.replace("i", "u"))  # same byte order, high bits readable
    high = unsigned >> stored
    signed = np.issubdtype(arr.dtype, np.signedinteger)
    all_ones = (1 << (allocated - stored)) - 1
    if signed and ((high == 0) | (high == all_ones)).all():
        shift = allocated - stored
        return (arr << shift) >> shift
    if not signed and not high.any():
        return arr
    needed = int(unsigned.max()).bit_length()
    raise ImageLoadError(
        f"{label}: the DICOM header says BitsStored = {stored}, but pixel values need {needed} bits "
        f"(largest stored value {int(unsigned.max()):,}). The header does not match the pixel data; "
        "re-export the image."
    )


def _check_jpeg_frame(ds: pydicom.Dataset, label: str) -> None:
    """Refuse a JPEG frame whose scan is shorter than its frame header declares.

    pydicom's JPEG decoders pad a cut frame with zeros without an error. A frame without an
    end-of-image marker is cut for certain; for 8-bit frames (which Pillow decodes) the same
    junk test as for JPEG files finds frames whose scan runs out early.
    """
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    if not frame.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageLoadError(
            f"{label}: the DICOM JPEG frame has no end-of-image marker: its pixel data is truncated "
            "and would be filled with gray. Re-export the image."
        )
    if _int_or(ds.get("BitsAllocated"), 8) == 8:
        missing = _jpeg_shortfall(frame)
        if missing:
            raise ImageLoadError(
                f"{label}: the DICOM JPEG frame is truncated: {missing}. The decoder would fill the "
                "missing part with gray; re-export the image."
            )


def _scale_between(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """``(arr - low) / (high - low)`` as float32, without a full-size float64 temporary.

    The subtraction runs in the input's precision but is written straight into the float32
    result (numpy buffers the cast), so a 16-bit radiograph costs 4 bytes per pixel here.
    """
    out = np.empty(arr.shape, np.float32)
    if high == low:
        out.fill(0.0)
        return out
    np.subtract(arr, low, out=out, casting="same_kind")
    out *= np.float32(1.0 / (high - low))  # a negative range (negative slope) still maps low -> 0
    return out


def _transfer_syntax(ds: pydicom.Dataset, label: str) -> UID:
    """The transfer syntax, inferred from how the file was read when the file meta lacks it."""
    meta = ds.file_meta if hasattr(ds, "file_meta") else pydicom.dataset.FileMetaDataset()
    syntax = meta.get("TransferSyntaxUID")
    if syntax is None:
        if "PixelData" in ds and ds["PixelData"].is_undefined_length:
            raise ImageLoadError(
                f"{label}: the DICOM pixel data is compressed but the file has no transfer syntax "
                "(no file meta header); re-export it as a standard DICOM file."
            )
        implicit, little = ds.original_encoding
        syntax = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
        meta.TransferSyntaxUID = syntax
        ds.file_meta = meta
    return UID(syntax)


def _require_decoder(syntax: UID, label: str) -> None:
    if not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ImageLoadError(
            f"{label}: the DICOM pixel data uses transfer syntax '{syntax.name}' ({syntax}), which no "
            "available decoder supports. Re-export it uncompressed or as JPEG/JPEG 2000."
        ) from exc
    if not decoder.is_available:
        needed = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        raise ImageLoadError(
            f"{label}: the DICOM pixel data is compressed with '{syntax.name}' ({syntax}) and no "
            f"decoder for it is installed. Install one of: {needed}."
        )


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _first(value: Any) -> Any:
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    return _json_safe(value)


def _json_safe(value: Any) -> Any:
    """pydicom values (DSfloat, IS, PersonName, MultiValue, UID) as plain JSON types."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return None
    return str(value)
