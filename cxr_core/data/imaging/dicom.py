"""DICOM files: header checks before decoding, pixel data checked against the header, one gray plane.

pydicom masks values that do not fit BitsStored and its JPEG decoders pad a cut frame with
zeros, so both are checked here and such files refused instead of scored. The stored values
of a monochrome image are kept at full depth (:attr:`LoadedImage.stored`) for a viewer's
window/level; the gray plane follows the file's own VOI LUT or window.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_windowing, get_decoder
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

from cxr_core.data.imaging.dicom_voi import apply_voi_lut, by_row_blocks
from cxr_core.data.imaging.integrity import check_jpeg_data
from cxr_core.data.imaging.limits import ImageLimits, check_decoded_bytes, check_pixel_count
from cxr_core.data.imaging.scale import LUMA, min_max, scale_between, scale_by_stored_bits
from cxr_core.data.imaging.sniff import not_an_image_message
from cxr_core.data.imaging.truncation import jpeg_shortfall
from cxr_core.errors import ImageLoadError

# Huffman-coded JPEG processes, whose decoders fill a short scan with zeros instead of failing.
_DICOM_JPEG_SYNTAXES = frozenset(
    {JPEGBaseline8Bit, JPEGExtended12Bit, JPEGLossless, JPEGLosslessSV1}
)
_HEADER_FIELDS = (
    ("view_position", "ViewPosition"),
    ("patient_id", "PatientID"),
    ("modality", "Modality"),
    ("body_part", "BodyPartExamined"),
    ("study_date", "StudyDate"),
    ("patient_age", "PatientAge"),
    ("patient_sex", "PatientSex"),
)


def load_dicom(
    data: bytes, label: str, limits: ImageLimits, *, force: bool, suffix: str
) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Gray pixels, metadata and (monochrome only) the stored values at full depth."""
    ds = _read_dataset(data, label, force=force, suffix=suffix)
    rows, cols = _checked_geometry(ds, label, limits)
    syntax = _transfer_syntax(ds, label)
    _require_decoder(syntax, label)
    arr = _pixel_array(ds, syntax, label)
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
    meta.update({key: _json_safe(ds.get(keyword)) for key, keyword in _HEADER_FIELDS})
    if photometric.startswith("MONOCHROME"):
        pixels = _dicom_monochrome(arr, ds, meta, label)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 stores bone dark; display convention is bone white.
            np.subtract(1.0, pixels, out=pixels)
        meta["inverted"] = photometric == "MONOCHROME1"
        return pixels, meta, arr if arr.ndim == 2 else None
    return _dicom_colour(arr, ds, meta, photometric, label), meta, None


def _read_dataset(data: bytes, label: str, *, force: bool, suffix: str) -> pydicom.Dataset:
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
        raise ImageLoadError(not_an_image_message(data, label))
    return ds


def _checked_geometry(ds: pydicom.Dataset, label: str, limits: ImageLimits) -> tuple[int, int]:
    """(rows, columns) of a single-frame image whose decode fits ``limits``."""
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
    check_pixel_count(cols, rows, label, limits)
    samples = max(1, _int_or(ds.get("SamplesPerPixel"), 1))
    allocated = _int_or(ds.get("BitsAllocated"), 16)
    check_decoded_bytes(cols, rows, samples, max(1, (allocated + 7) // 8), "DICOM", label, limits)
    return rows, cols


def _pixel_array(ds: pydicom.Dataset, syntax: UID, label: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # Unmasked values, so that data wider than BitsStored is seen instead of turned into noise.
            ds.pixel_array_options(correct_unused_bits=False)
            return ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoder plugins raise many types
        raise ImageLoadError(
            f"{label}: the DICOM pixel data ({syntax.name}) could not be decoded ({exc}). "
            "The file may be truncated or damaged; re-export it."
        ) from exc


def _dicom_colour(
    arr: np.ndarray, ds: pydicom.Dataset, meta: dict[str, Any], photometric: str, label: str
) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        meta["voi"] = "palette lookup"
        return (rgb[..., :3] @ LUMA) / float(np.iinfo(rgb.dtype).max)
    if arr.ndim == 3 and arr.shape[2] == 3:
        # pydicom returns RGB for RGB and YBR_* encodings alike.
        bits = _int_or(ds.get("BitsStored"), 8)
        meta["voi"] = "color to luma"
        return (arr.astype(np.float64) @ LUMA) / float(2**bits - 1)
    raise ImageLoadError(
        f"{label}: DICOM photometric interpretation '{photometric}' is not supported."
    )


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
        mapped, lut = apply_voi_lut(values, lut_items[0], ds, label)
        meta["voi"] = "VOI LUT"
        # The LUT's own entries define its output range; the descriptor's bit count is often wrong.
        return scale_between(mapped, float(lut.min()), float(lut.max()))

    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            mapped = by_row_blocks(lambda block: apply_windowing(block, ds, 0), values)
            with np.errstate(over="ignore"):
                low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, 0)
        except (ValueError, TypeError, IndexError) as exc:
            meta["voi"] = f"min-max (window ignored: {exc})"
            return min_max(values)
        meta["voi"] = "window"
        meta["window"] = {
            "center": _first(ds.WindowCenter),
            "width": _first(ds.WindowWidth),
            "function": str(ds.get("VOILUTFunction", "LINEAR")),
        }
        return scale_between(mapped, float(low), float(high))

    pixels, meta["voi"] = scale_by_stored_bits(
        values.astype(np.float32, copy=False), _int_or(ds.get("BitsStored"), 16)
    )
    return pixels


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
        missing = jpeg_shortfall(frame)
        if missing:
            raise ImageLoadError(
                f"{label}: the DICOM JPEG frame is truncated: {missing}. The decoder would fill the "
                "missing part with gray; re-export the image."
            )
        check_jpeg_data(frame, label)


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
