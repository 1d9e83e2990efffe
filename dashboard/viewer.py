"""Window/level for the image viewer: presets, the automatic window, and display pixels.

The decoded radiograph is float in [0, 1] (see ``INTENSITY_NOTE`` in :mod:`dashboard.reading`);
window and level here are on that scale, the way a reading station's sliders act on the
displayed range. Windowing changes what the reader sees, never what the model scores.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

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


def resize_for_view(image: np.ndarray, max_side: int = MAX_VIEW_SIDE) -> np.ndarray:
    """uint8 image (gray or RGB) with its longest side at most ``max_side`` (area-averaged)."""
    scale = view_scale(image.shape, max_side)
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


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
