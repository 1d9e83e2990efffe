"""Where a reader marks a finding on the film: a click (point) or a drag (box) on the Review page's viewer.

Plotly selects data points, not pixels of an image, so the viewer lays an invisible grid of
:data:`GRID` x :data:`GRID` points over the film (trace :data:`GRID_TRACE`); a click selects
the nearest grid point (a point mark, to 1/GRID of the image), a box drag returns its corners
exactly. Marks are stored as fractions of the image's width and height, the unit of the
review store, so they do not depend on the size the film was shown at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

GRID = 64
GRID_TRACE = 1
"""Index of the grid trace in the viewer figure (the film is trace 0)."""


@dataclass(frozen=True)
class Mark:
    """A point (x, y) or a box (x0, y0, x1, y1), as fractions of the image's width and height."""

    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None

    def text(self) -> str:
        """Where, in words a reader can check (percent of width and height from the top left)."""
        if self.box is not None:
            x0, y0, x1, y1 = (round(v * 100) for v in self.box)
            return f"box {x0}–{x1}% across, {y0}–{y1}% down"
        if self.point is not None:
            return f"point {round(self.point[0] * 100)}% across, {round(self.point[1] * 100)}% down"
        return "no mark"


def stored(
    point: tuple[float, float] | None, box: tuple[float, float, float, float] | None
) -> Mark | None:
    """The mark of a saved verdict (its ``point`` and ``box``), None when it has neither."""
    return Mark(point, box) if point is not None or box is not None else None


def from_columns(row: Mapping) -> Mark | None:
    """The mark stored in a verdict row (the review store's ``point_*`` and ``box_*`` columns), if any."""

    def number(name: str) -> float | None:
        value = row.get(name)
        return (
            None if value is None or value != value else float(value)
        )  # NaN from a data frame: no value

    box = tuple(number(c) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
    if None not in box:
        return Mark(box=box)
    point = (number("point_x"), number("point_y"))
    return Mark(point=point) if None not in point else None


def grid(width: int, height: int, n: int = GRID) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of the centres of an n x n grid over an image (flattened x and y)."""
    xs = (np.arange(n) + 0.5) * width / n
    ys = (np.arange(n) + 0.5) * height / n
    gx, gy = np.meshgrid(xs, ys)
    return gx.ravel().astype(np.float32), gy.ravel().astype(
        np.float32
    )  # float32: half the bytes sent per rerun


def from_selection(selection: Mapping | None, width: int, height: int) -> Mark | None:
    """The mark a viewer selection stands for: the last box dragged, else the grid point clicked; None when
    the selection holds neither (a cleared selection, a click beside the grid)."""
    if not selection:
        return None
    boxes = [
        b
        for b in selection.get("box") or []
        if len(b.get("x") or []) == 2 and len(b.get("y") or []) == 2
    ]
    if boxes:
        xs = sorted(min(max(float(v) / width, 0.0), 1.0) for v in boxes[-1]["x"])
        ys = sorted(min(max(float(v) / height, 0.0), 1.0) for v in boxes[-1]["y"])
        if xs[0] == xs[1] or ys[0] == ys[1]:
            return None
        return Mark(box=(xs[0], ys[0], xs[1], ys[1]))
    points = [p for p in selection.get("points") or [] if p.get("curve_number") == GRID_TRACE]
    if points:
        x, y = float(points[-1]["x"]), float(points[-1]["y"])
        return Mark(point=(min(max(x / width, 0.0), 1.0), min(max(y / height, 0.0), 1.0)))
    return None


def zoom_window(
    width: int, height: int, factor: float, centre: tuple[float, float] = (0.5, 0.5)
) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) in pixels: the part of the image a ``factor``x zoom shows around ``centre``
    (fractions of width, height), kept inside the image; factor 1 is the whole image."""
    if factor <= 1.0:
        return 0.0, float(width), 0.0, float(height)
    w, h = width / factor, height / factor
    x0 = min(max(centre[0] * width - w / 2, 0.0), width - w)
    y0 = min(max(centre[1] * height - h / 2, 0.0), height - h)
    return x0, x0 + w, y0, y0 + h
