"""Intensity scaling shared by the raster and DICOM decoders.

Conversions here write float32 straight from the stored integers, so that a 16-bit film costs
4 bytes per pixel, never a float64 temporary of the full image.
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights Pillow's "L" conversion uses


def scale_between(arr: np.ndarray, low: float, high: float) -> np.ndarray:
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


def min_max(arr: np.ndarray) -> np.ndarray:
    return scale_between(arr, float(arr.min()), float(arr.max()))


def scale_by_stored_bits(values: np.ndarray, bits: int) -> tuple[np.ndarray, str]:
    """The intensity rule for images without a window: divide by the largest value the stored bit
    depth can hold (``2**bits - 1``), as for PNG/TIFF, so the same pixels score the same in either
    format; values outside that range (a rescale to signed units) fall back to min-max."""
    top = float(2 ** max(1, min(int(bits), 32)) - 1)
    if values.size and float(values.min()) >= 0.0 and float(values.max()) <= top:
        return values / top, f"divided by {int(top)} (stored bit depth)"
    return min_max(values), "min-max (values outside the stored bit depth)"
