"""Window/level for the image viewer: presets, the automatic window, display pixels, the lung outline.

The decoded radiograph is float in [0, 1] (see ``INTENSITY_NOTE`` in :mod:`dashboard.reading`);
window and level here are on that scale, the way a reading station's sliders act on the
displayed range. Windowing changes what the reader sees, never what the model scores.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr_core.inference.lungs import LungResult, lung_contours, mask_png

# name -> (level = window centre, width), on the 0..1 display scale; None: computed per image.
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "Full range": (0.5, 1.0),
    "Auto (1st–99th percentile)": None,
    "Lungs (dark detail)": (0.35, 0.55),
    "Mediastinum / bone (bright detail)": (0.70, 0.50),
}
DEFAULT_PRESET = "Auto (1st–99th percentile)"
MAX_VIEW_SIDE = 2048
"""Longest side sent to the browser; larger images are downsampled (shown in the caption)."""


def auto_window(pixels: np.ndarray) -> tuple[float, float]:
    """(level, width) spanning the 1st to 99th percentile of the image's values."""
    low, high = (float(v) for v in np.percentile(pixels, [1.0, 99.0]))
    if high - low < 1e-3:
        return float(np.clip((low + high) / 2, 0.0, 1.0)), 1.0
    return (low + high) / 2, high - low


def preset_window(name: str, pixels: np.ndarray) -> tuple[float, float]:
    """The (level, width) of a preset for this image."""
    window = WINDOW_PRESETS[name]
    return auto_window(pixels) if window is None else window


def apply_window(pixels: np.ndarray, level: float, width: float) -> np.ndarray:
    """uint8 display image: ``level - width/2`` maps to black, ``level + width/2`` to white."""
    width = max(float(width), 1e-6)
    low = float(level) - width / 2
    scaled = (np.asarray(pixels, dtype=np.float32) - low) / width
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def view_scale(shape: tuple[int, ...], max_side: int = MAX_VIEW_SIDE) -> float:
    """Factor (≤ 1) that brings the longest side to at most ``max_side`` pixels."""
    return min(1.0, max_side / max(shape[:2]))


def view_size(shape: tuple[int, ...], max_side: int = MAX_VIEW_SIDE) -> tuple[int, int]:
    """(width, height) of the image as sent to the browser."""
    scale = view_scale(shape, max_side)
    height, width = shape[:2]
    return (
        (width, height)
        if scale >= 1.0
        else (max(1, round(width * scale)), max(1, round(height * scale)))
    )


def resize_for_view(image: np.ndarray, max_side: int = MAX_VIEW_SIDE) -> np.ndarray:
    """uint8 image (gray or RGB) with its longest side at most ``max_side`` (area-averaged)."""
    size = view_size(image.shape, max_side)
    if size == (image.shape[1], image.shape[0]):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


def outline_for_view(
    contours: Sequence[np.ndarray], shape: tuple[int, ...], max_side: int = MAX_VIEW_SIDE
) -> list[np.ndarray]:
    """Closed outlines ((x, y) pixel centres of an image of ``shape``, as :func:`lung_contours`
    gives them) in the viewer's coordinates, where displayed pixel k is centred on k.

    The displayed image may be downsampled (:func:`resize_for_view`); a full-resolution pixel x
    spans [x, x + 1) of the original, i.e. [x·s, (x + 1)·s) of the display, hence (x + 0.5)·s − 0.5.
    """
    width, height = view_size(shape, max_side)
    sx, sy = width / shape[1], height / shape[0]
    out = []
    for points in contours:
        closed = np.vstack([points, points[:1]]).astype(np.float64)
        out.append(
            np.column_stack([(closed[:, 0] + 0.5) * sx - 0.5, (closed[:, 1] + 0.5) * sy - 0.5])
        )
    return out


@dataclass(frozen=True)
class LungView:
    """One image's lung mask as the Predict page uses it: computed once per uploaded image."""

    result: LungResult  # the mask at the image's size, its lung-area fraction and the input check
    outline: list[np.ndarray]  # closed (x, y) polygons in viewer coordinates, largest lung first
    png: bytes  # the mask as the "Download lung mask" PNG (0/255, the image's size)


def lung_view(result: LungResult) -> LungView:
    """The outline and PNG of a lung result (tracing and encoding once, not on every redraw)."""
    return LungView(
        result,
        outline_for_view(lung_contours(result.mask), result.mask.shape),
        mask_png(result.mask),
    )


def png_data_uri(image: np.ndarray) -> str:
    """uint8 gray or RGB array as a ``data:image/png`` URI (for a Plotly image trace)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


CONTENT_WIDTH = 1000
"""Width of the page's main column at 1440 px with the sidebar open (the design viewport)."""
MAX_VIEW_HEIGHT = 760


def panel_height(shape: tuple[int, ...], panels: int, content_width: int = CONTENT_WIDTH) -> int:
    """Figure height that fits ``panels`` side-by-side images of ``shape`` into the column without
    empty bands (capped so a single tall image still fits a laptop screen)."""
    height, width = shape[:2]
    return int(min(MAX_VIEW_HEIGHT, content_width / panels * height / width + 40))
