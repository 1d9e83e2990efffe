"""The film viewer: the display copy of a film, its window presets, the lung outline, the component.

The decoded radiograph is float in [0, 1] (see ``INTENSITY_NOTE`` in :mod:`dashboard.reading`).
The Predict page's viewer (``assets/film_viewer.js``, a Streamlit v2 component) receives a copy
resized to at most ``MAX_VIEW_SIDE`` pixels but kept at the film's own bit depth (16 bits for a
12- or 16-bit DICOM), so window and level act in the browser on the full range of stored values
(the numbers a reading station shows), at once and without a server round trip; both panels
share one view, so they zoom and pan together. Windowing changes what the reader sees, never
what the model scores.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import streamlit as st
from PIL import Image

from cxr_core.data.imaging import LoadedImage
from cxr_core.inference.lungs import LungResult, lung_contours, mask_png

# name -> (level = window centre, width) as fractions of the full scale; None: computed per image.
WINDOW_PRESETS: dict[str, tuple[float, float] | None] = {
    "Auto (1st–99th percentile)": None,
    "Full range": (0.5, 1.0),
    "Lungs (dark detail)": (0.35, 0.55),
    "Mediastinum / bone (bright detail)": (0.70, 0.50),
}
MAX_VIEW_SIDE = 2048
"""Longest side sent to the browser; larger images are downsampled (shown in the caption)."""


AUTO_WINDOW_PIXELS = 1_000_000
"""The automatic window reads at most about this many pixels (an even grid of them): a 5-megapixel
film's percentiles move by far less than one grey level, in a fifth of the time."""


def auto_window(pixels: np.ndarray) -> tuple[float, float]:
    """(level, width) spanning the 1st to 99th percentile of the image's values."""
    step = max(1, int(np.sqrt(pixels.size / AUTO_WINDOW_PIXELS)))
    low, high = (float(v) for v in np.percentile(pixels[::step, ::step], [1.0, 99.0]))
    if high - low < 1e-3:
        return float(np.clip((low + high) / 2, 0.0, 1.0)), 1.0
    return (low + high) / 2, high - low


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

    def png(self) -> bytes:
        """The mask as the "Download lung mask" PNG (0/255, the image's size), made when asked
        for: encoding five million pixels on every upload would slow every film for one click."""
        return mask_png(self.result.mask)


def lung_view(result: LungResult) -> LungView:
    """The outline of a lung result (traced once, not on every redraw)."""
    return LungView(result, outline_for_view(lung_contours(result.mask), result.mask.shape))


def png_data_uri(image: np.ndarray) -> str:
    """uint8 gray or RGB array as a ``data:image/png`` URI (for a Plotly image trace)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class ViewImage:
    """A display image encoded once: a 2,048 px film costs ~0.1 s to encode as PNG, so the Review
    page's reruns (and the next film's prefetch) reuse the encoding instead of repeating it."""

    height: int
    width: int
    uri: str

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @classmethod
    def of(cls, image: np.ndarray) -> ViewImage:
        """``image``: uint8 gray or RGB, already at view size (:func:`resize_for_view`)."""
        return cls(int(image.shape[0]), int(image.shape[1]), png_data_uri(image))


CONTENT_WIDTH = 1000
"""Width of the page's main column at 1440 px with the sidebar open (the design viewport)."""
MAX_VIEW_HEIGHT = 760
"""Tallest a film is drawn outside full screen (Review's film column uses it too)."""

ASSETS = Path(__file__).resolve().parent / "assets"
_FILM_VIEWER = st.components.v2.component(
    "cxr.film_viewer",
    js=(ASSETS / "film_viewer.js").read_text(encoding="utf-8"),
    css=(ASSETS / "film_viewer.css").read_text(encoding="utf-8"),
)
CONTOUR_COLOUR = "#ff4000"
LUNG_COLOUR = "#00d8ff"  # cyan: apart from the orange heatmap outline and the inferno colours
HEAT_FLOOR = 0.2
"""Heat mode: map values below this stay clear, so the film is not tinted everywhere."""
_DIVIDED = re.compile(r"divided by (\d+)")


@dataclass(frozen=True)
class FilmDisplay:
    """What the viewer draws of one film: the display copy and the scale its window is set in.

    ``pixels`` is the film resized to at most ``MAX_VIEW_SIDE`` (area-averaged), quantised to
    8 bits for an 8-bit film and to 16 bits otherwise, so no stored level is lost. The window is
    in ``unit`` from 0 to ``max_value``: the stored values (0–4095 for a 12-bit DICOM) when the
    film was decoded by dividing by its bit depth, else the decoded display values on that scale.
    """

    pixels: np.ndarray
    max_value: int
    unit: str
    source: tuple[int, int]  # the film's own (width, height)
    presets: tuple[tuple[str, float, float], ...]  # (name, level, width) in ``unit``

    @property
    def window(self) -> tuple[float, float]:
        """The window a film opens with: the first preset (automatic, 1st–99th percentile)."""
        return self.presets[0][1], self.presets[0][2]


def film_display(image: LoadedImage) -> FilmDisplay:
    """The display copy of ``image`` and its window presets (compute once per film: a 2,500 ×
    2,048 film takes tens of milliseconds)."""
    height, width = image.pixels.shape
    size = view_size(image.pixels.shape)
    pixels = (
        image.pixels
        if size == (width, height)
        else cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA)
    )
    how = str(image.meta.get("voi") or image.meta.get("scale") or "")
    divided = _DIVIDED.search(how)
    bit_depth = int(image.meta.get("bit_depth") or 8)
    max_value = int(divided.group(1)) if divided else 2 ** min(max(bit_depth, 8), 16) - 1
    bits = 8 if max_value <= 255 else 16
    top = 2**bits - 1
    quantised = np.rint(np.clip(pixels, 0.0, 1.0) * top).astype(np.uint8 if bits == 8 else "<u2")
    presets = tuple(
        (name, *(v * max_value for v in (auto_window(pixels) if window is None else window)))
        for name, window in WINDOW_PRESETS.items()
    )
    unit = "stored values" if divided else "display values"
    return FilmDisplay(quantised, max_value, unit, (width, height), presets)


def viewer_payload(
    film_id: str,
    display: FilmDisplay,
    *,
    heat: np.ndarray | None = None,
    heat_style: Mapping[str, object] | None = None,
    lungs: Sequence[np.ndarray] = (),
    titles: Sequence[str] = ("Original",),
) -> bytes:
    """The viewer's data: a little-endian uint32 header length, the JSON header, the display
    pixels, then the heatmap (values in [0, 1] on any grid, sent as uint8) when there is one.

    ``heat_style``: ``mode`` ("contour": the line where the map reaches ``level``; "heat": colours
    from ``HEAT_FLOOR`` up, at ``opacity``). ``lungs``: closed outlines in display pixels
    (:func:`outline_for_view`), drawn on every panel.
    """
    height, width = display.pixels.shape
    header: dict = {
        "id": film_id,
        "width": width,
        "height": height,
        "source": list(display.source),
        "bits": display.pixels.dtype.itemsize * 8,
        "max_value": display.max_value,
        "unit": display.unit,
        "window": list(display.window),
        "presets": [list(p) for p in display.presets],
        "titles": list(titles),
        "max_height": MAX_VIEW_HEIGHT,
        "lungs": [np.round(np.asarray(p, dtype=np.float64), 1).ravel().tolist() for p in lungs],
        "lung_colour": LUNG_COLOUR,
        "heat": None,
    }
    blocks = [np.ascontiguousarray(display.pixels).tobytes()]
    if heat is not None:
        style = {"mode": "contour", "level": 0.5, "opacity": 0.5, **(heat_style or {})}
        grid = np.rint(np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255).astype(np.uint8)
        header["heat"] = {
            "width": int(grid.shape[1]),
            "height": int(grid.shape[0]),
            "floor": HEAT_FLOOR,
            "colour": CONTOUR_COLOUR,
            **style,
        }
        blocks.append(grid.tobytes())
    text = json.dumps(header).encode("utf-8")
    return b"".join([len(text).to_bytes(4, "little"), text, *blocks])


def read_payload(payload: bytes) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """(header, display pixels, heatmap grid as uint8 or None): what the viewer receives."""
    length = int.from_bytes(payload[:4], "little")
    header = json.loads(payload[4 : 4 + length])
    dtype = np.uint8 if header["bits"] == 8 else np.dtype("<u2")
    count = header["width"] * header["height"]
    start = 4 + length
    pixels = np.frombuffer(payload, dtype, count, start).reshape(header["height"], header["width"])
    heat = None
    if header["heat"] is not None:
        grid = header["heat"]
        at = start + count * np.dtype(dtype).itemsize
        heat = np.frombuffer(payload, np.uint8, grid["width"] * grid["height"], at)
        heat = heat.reshape(grid["height"], grid["width"])
    return header, pixels, heat


def show_viewer(payload: bytes, key: str) -> None:
    """Mount the film viewer (one instance per ``key``; its zoom, pan and window stay while the
    same film is redrawn, e.g. with another heatmap)."""
    _FILM_VIEWER(data=payload, key=key, height="content")
