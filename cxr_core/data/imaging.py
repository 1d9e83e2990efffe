"""Reading any radiograph file (PNG, JPEG, BMP, TIFF, DICOM) into one float image.

Every other module (cache building, prediction, the dashboard upload) goes through
``load_image`` so that a radiograph looks the same wherever it is read: gray, float32 in
[0, 1], bright = dense (bone white as a reader sees it on a light box).

The format is taken from the file's content, not its name, because exported radiographs are
often misnamed (a PNG called ``.jpg``, a DICOM without extension). Limits on bytes and pixels
are checked before any decoding so that a hostile or broken upload cannot exhaust memory.
Every failure is an ``ImageLoadError`` naming the file and what to do.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
)
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from cxr_core.errors import ImageLoadError

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)

_DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ""})
_PIL_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")  # JPEG also yields MPO (camera JPEGs)
_FORMAT_NAMES = {"MPO": "JPEG"}  # multi-picture JPEGs from cameras: frame 0 is the picture
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights Pillow's "L" conversion uses
_DETECTOR_BITS = (8, 10, 12, 14, 16)
_HELP_FORMATS = "Supported formats: PNG, JPEG, BMP, TIFF and DICOM."


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds checked before decoding, so a decompression bomb is refused cheaply."""

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 60_000_000


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

    if len(data) >= 132 and data[128:132] == b"DICM":
        pixels, meta = _load_dicom(data, label, limits, force=False, suffix=suffix)
    else:
        opened = _open_pil(data, label, limits)
        if opened is not None:
            pixels, meta = _load_pil(opened, data, label, limits)
        elif suffix in _DICOM_EXTENSIONS or _looks_like_raw_dicom(data):
            pixels, meta = _load_dicom(data, label, limits, force=True, suffix=suffix)
        else:
            raise ImageLoadError(_not_an_image_message(data, label))

    meta["constant"] = bool(pixels.size) and float(pixels.min()) == float(pixels.max())
    if meta["constant"]:
        # A uniform image carries no anatomy; zeros keep every later normalisation finite.
        pixels = np.zeros_like(pixels)
    pixels = np.clip(pixels, 0.0, 1.0).astype(np.float32)
    return LoadedImage(pixels=pixels, name=label, meta=meta)


# --------------------------------------------------------------------------- reading bytes


def _read_file(path: Path, label: str, limits: ImageLimits) -> bytes:
    try:
        size = path.stat().st_size
    except FileNotFoundError as exc:
        raise ImageLoadError(f"{label}: file not found. Check the path or re-upload the image.") from exc
    except OSError as exc:
        raise ImageLoadError(f"{label}: cannot be accessed ({exc.strerror or exc}).") from exc
    if path.is_dir():
        raise ImageLoadError(f"{label}: is a folder, not an image file.")
    _check_byte_count(size, label, limits)
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise ImageLoadError(f"{label}: cannot be read ({exc.strerror or exc}).") from exc
    _check_byte_count(len(data), label, limits)
    return data


def _check_byte_count(size: int, label: str, limits: ImageLimits) -> None:
    if size == 0:
        raise ImageLoadError(f"{label}: the file is empty (0 bytes); the export or upload did not complete.")
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
        raise ImageLoadError(f"{label}: the image header is damaged ({exc}). Re-export the image.") from exc
    _check_pixel_count(image.width, image.height, label, limits)
    return image


def _load_pil(image: Image.Image, data: bytes, label: str, limits: ImageLimits) -> tuple[np.ndarray, dict]:
    fmt = _FORMAT_NAMES.get(image.format or "", image.format or "unknown")
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":
        raise ImageLoadError(
            f"{label}: the {fmt} file holds {frames} pages/frames; save the single radiograph on its own."
        )
    try:
        image.load()  # full decode: a truncated file fails here instead of yielding gray rows
        if image.format == "PNG":
            # Pillow accepts a PNG cut after its last image chunk; verify() walks every CRC to IEND.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.open(io.BytesIO(data), formats=["PNG"]).verify()
        orientation = int(image.getexif().get(0x0112, 1) or 1)
        image = ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - OSError, SyntaxError, struct.error, zlib errors...
        raise ImageLoadError(
            f"{label}: the {fmt} file is damaged or truncated ({exc}). Re-export or re-upload it."
        ) from exc
    _check_pixel_count(image.width, image.height, label, limits)

    pixels, scaling = _pil_to_gray(image, data, fmt, label)
    meta: dict[str, Any] = {
        "format": fmt,
        "mode": image.mode,
        "bit_depth": _pil_bit_depth(image.mode),
        "size": [image.width, image.height],
        "orientation": orientation,
        **scaling,
    }
    return pixels, meta


def _pil_bit_depth(mode: str) -> int:
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _pil_to_gray(image: Image.Image, data: bytes, fmt: str, label: str) -> tuple[np.ndarray, dict]:
    """Gray float64 in [0, 1] and a description of how values were scaled."""
    mode = image.mode
    if mode in ("P", "PA"):
        image, mode = image.convert("RGBA"), "RGBA"  # palette may carry transparency (tRNS)
    if mode in ("CMYK", "YCbCr"):
        image, mode = image.convert("RGB"), "RGB"

    if mode == "1":
        return np.asarray(image, dtype=np.float64), {"scale": "bilevel"}
    if mode == "L":
        return np.asarray(image, dtype=np.float64) / 255.0, {"scale": "divided by 255"}
    if mode in ("LA", "La", "RGB", "RGBX", "RGBA", "RGBa"):
        arr = np.asarray(image, dtype=np.float64) / 255.0
        gray = arr[..., 0] if mode.startswith("L") else arr[..., :3] @ _LUMA
        if mode in ("LA", "RGBA"):
            # Transparent areas lie outside the exposed film, which a viewer shows black;
            # compositing on white would make them look like dense bone.
            return gray * arr[..., -1], {"scale": "divided by 255", "alpha": "composited on black"}
        return gray, {"scale": "divided by 255"}
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(image).astype(np.float64)
        low, high = float(arr.min()), float(arr.max())
        if low < 0 or high > 65535:
            return _min_max(arr), {"scale": "min-max (values outside 0..65535)"}
        bits, source = _significant_bits(data, fmt, high)
        return arr / float(2**bits - 1), {"scale": f"divided by {2**bits - 1}", "bits_stored": bits,
                                          "bits_source": source}
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageLoadError(f"{label}: the floating-point image contains NaN or infinite values.")
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
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"sBIT":
            return data[pos + 8] if length >= 1 and pos + 9 <= len(data) else None
        if kind in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _min_max(arr: np.ndarray) -> np.ndarray:
    low, high = float(arr.min()), float(arr.max())
    if high == low:
        return np.zeros_like(arr, dtype=np.float64)
    return (arr - low) / (high - low)


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
        raise ImageLoadError(f"{label}: the DICOM header has no valid Rows/Columns ({rows}x{cols}).")
    _check_pixel_count(cols, rows, label, limits)

    syntax = _transfer_syntax(ds, label)
    _require_decoder(syntax, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise many types
        raise ImageLoadError(
            f"{label}: the DICOM pixel data ({syntax.name}) could not be decoded ({exc}). "
            "The file may be truncated or damaged; re-export it."
        ) from exc
    if arr.ndim not in (2, 3) or arr.shape[:2] != (rows, cols):
        raise ImageLoadError(f"{label}: unexpected DICOM pixel array shape {arr.shape}.")

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
    for key, keyword in (("view_position", "ViewPosition"), ("patient_id", "PatientID"),
                         ("modality", "Modality"), ("body_part", "BodyPartExamined"),
                         ("study_date", "StudyDate"), ("patient_age", "PatientAge"),
                         ("patient_sex", "PatientSex")):
        meta[key] = _json_safe(ds.get(keyword))

    if photometric.startswith("MONOCHROME"):
        pixels = _dicom_monochrome(arr, ds, meta)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels  # MONOCHROME1 stores bone dark; display convention is bone white
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
        raise ImageLoadError(f"{label}: DICOM photometric interpretation '{photometric}' is not supported.")
    return pixels, meta


def _dicom_monochrome(arr: np.ndarray, ds: pydicom.Dataset, meta: dict[str, Any]) -> np.ndarray:
    """Modality LUT (rescale), then the file's own VOI LUT or window, else min-max."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        meta["rescale"] = {"slope": _json_safe(ds.get("RescaleSlope", 1)),
                           "intercept": _json_safe(ds.get("RescaleIntercept", 0))}
    values = apply_modality_lut(arr, ds)
    if np.issubdtype(values.dtype, np.floating) and np.all(values == np.round(values)):
        values = values.astype(np.int64)  # VOI LUTs index by integer values

    lut_items = ds.get("VOILUTSequence")
    if lut_items and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]:
        mapped = apply_voi(values, ds, 0).astype(np.float64)
        lut = np.asarray(_lut_entries(lut_items[0], ds), dtype=np.float64)
        meta["voi"] = "VOI LUT"
        # The LUT's own entries define its output range; the descriptor's bit count is often wrong.
        return _scale_between(mapped, float(lut.min()), float(lut.max()))

    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            mapped = apply_windowing(values, ds, 0)
            with np.errstate(over="ignore"):
                low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, 0)
        except (ValueError, TypeError, IndexError) as exc:
            meta["voi"] = f"min-max (window ignored: {exc})"
            return _min_max(values.astype(np.float64))
        meta["voi"] = "window"
        meta["window"] = {"center": _first(ds.WindowCenter), "width": _first(ds.WindowWidth),
                          "function": str(ds.get("VOILUTFunction", "LINEAR"))}
        return _scale_between(mapped, float(low), float(high))

    pixels, meta["voi"] = scale_by_stored_bits(values.astype(np.float64), _int_or(ds.get("BitsStored"), 16))
    return pixels


def scale_by_stored_bits(values: np.ndarray, bits: int) -> tuple[np.ndarray, str]:
    """The intensity rule for images without a window: divide by the largest value the stored bit
    depth can hold (``2**bits - 1``), as for PNG/TIFF, so the same pixels score the same in either
    format; values outside that range (a rescale to signed units) fall back to min-max."""
    top = float(2 ** max(1, min(int(bits), 32)) - 1)
    if values.size and float(values.min()) >= 0.0 and float(values.max()) <= top:
        return values / top, f"divided by {int(top)} (stored bit depth)"
    return _min_max(values), "min-max (values outside the stored bit depth)"


def _lut_entries(item: pydicom.Dataset, ds: pydicom.Dataset) -> list[int]:
    data = item.LUTData
    if isinstance(data, bytes):
        little = ds.original_encoding[1] is not False
        return list(struct.unpack(f"{'<' if little else '>'}{len(data) // 2}H", data))
    return list(data) if isinstance(data, (list, pydicom.multival.MultiValue)) else [int(data)]


def _scale_between(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    if high == low:
        return np.zeros_like(arr, dtype=np.float64)
    return (arr - low) / (high - low)  # a negative range (negative slope) still maps low -> 0


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
        syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
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
