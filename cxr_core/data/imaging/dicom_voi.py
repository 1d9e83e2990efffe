"""A DICOM VOI LUT applied as PS3.3 C.11.2.1.1 defines it, and pydicom's windowing by row blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom

from cxr_core.errors import ImageLoadError


def apply_voi_lut(
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


def by_row_blocks(func: Any, values: np.ndarray) -> np.ndarray:
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
