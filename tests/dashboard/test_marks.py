"""Marks from the viewer's selection, the film viewer figure, zoom windows and the marks' wording."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest

from dashboard import charts, viewer, views
from dashboard.marks import (
    GRID,
    GRID_TRACE,
    Mark,
    from_columns,
    from_selection,
    grid,
    stored,
    zoom_window,
)


def test_a_click_on_the_grid_is_a_point_as_fractions_of_the_image():
    xs, ys = grid(200, 100)
    assert len(xs) == len(ys) == GRID * GRID
    assert (xs.min(), xs.max()) == pytest.approx((200 / GRID / 2, 200 - 200 / GRID / 2))
    assert (ys.min(), ys.max()) == pytest.approx((100 / GRID / 2, 100 - 100 / GRID / 2))
    i = 10 * GRID + 40  # row 10, column 40
    clicked = {
        "points": [
            {"curve_number": GRID_TRACE, "point_index": i, "x": float(xs[i]), "y": float(ys[i])}
        ],
        "box": [],
        "lasso": [],
    }
    mark = from_selection(clicked, 200, 100)
    assert mark.box is None and mark.point == pytest.approx(((40 + 0.5) / GRID, (10 + 0.5) / GRID))


def test_a_drag_is_a_box_with_sorted_corners_clamped_to_the_image():
    dragged = {
        "points": [{"curve_number": GRID_TRACE, "x": 5.0, "y": 5.0}],
        "box": [{"xref": "x", "yref": "y", "x": [150.0, 50.0], "y": [-20.0, 40.0]}],
    }
    assert from_selection(dragged, 200, 100) == Mark(
        box=(0.25, 0.0, 0.75, 0.4)
    )  # the box wins over its points


@pytest.mark.parametrize(
    "selection",
    [
        None,
        {},
        {"points": [], "box": [], "lasso": []},
        {
            "points": [{"curve_number": 2, "x": 10.0, "y": 10.0}],
            "box": [],
        },  # a drawn mark, not the grid
        {
            "points": [],
            "box": [{"x": [250.0, 300.0], "y": [10.0, 20.0]}],
        },  # wholly beside the image: no area left
    ],
)
def test_selections_that_are_no_mark(selection):
    assert from_selection(selection, 200, 100) is None


def test_marks_from_verdicts_and_export_rows():
    assert stored(None, None) is None
    assert stored((0.1, 0.2), None) == Mark(point=(0.1, 0.2))
    row = {
        "point_x": 0.1,
        "point_y": 0.2,
        "box_x0": np.nan,
        "box_y0": np.nan,
        "box_x1": np.nan,
        "box_y1": np.nan,
    }
    assert from_columns(row) == Mark(point=(0.1, 0.2))
    assert from_columns(
        {**row, "box_x0": 0.1, "box_y0": 0.2, "box_x1": 0.3, "box_y1": 0.4}
    ).box == (0.1, 0.2, 0.3, 0.4)
    assert from_columns({"point_x": None, "point_y": None}) is None


def test_zoom_window_stays_inside_the_image():
    assert zoom_window(80, 100, 1.0) == (0.0, 80.0, 0.0, 100.0)
    assert zoom_window(80, 100, 2.0) == (20.0, 60.0, 25.0, 75.0)
    assert zoom_window(80, 100, 4.0, (0.99, 0.99)) == (60.0, 80.0, 75.0, 100.0)
    assert zoom_window(80, 100, 2.0, (0.0, 0.0)) == (0.0, 40.0, 0.0, 50.0)


def test_film_figure_grid_marks_and_window():
    image = viewer.ViewImage.of(np.zeros((100, 200), np.uint8))
    shown = [
        charts.ShownMark("Edema", Mark(point=(0.25, 0.5)), "#fff"),
        charts.ShownMark("Mass", Mark(box=(0.1, 0.2, 0.3, 0.4)), "#0ff", saved=False),
    ]
    fig = json.loads(
        pio.to_json(
            charts.film_figure(
                image, shown, window=(50.0, 150.0, 25.0, 75.0), selectable=True, drag="select"
            )
        )
    )
    data = fig["data"]
    assert [t["type"] for t in data] == ["image", "scatter", "scatter", "scatter"]
    assert data[GRID_TRACE]["name"] == "grid" and data[GRID_TRACE]["hoverinfo"] == "none"
    point, box = (
        charts.film_figure(image, shown).data[i] for i in (1, 2)
    )  # not selectable: no grid
    assert list(point.x) == [50.0] and list(point.y) == [50.0]  # fractions back to pixels
    assert list(box.x) == pytest.approx([20, 60, 60, 20, 20]) and list(box.y) == pytest.approx(
        [20, 20, 40, 40, 20]
    )
    assert box.line.dash == "dash" and point.marker.line.dash == "solid"  # unsaved marks are dashed
    assert all(
        t["hoverinfo"] == "skip" for t in data[2:]
    )  # a click on a mark still lands on the grid
    assert fig["layout"]["xaxis"]["range"] == [50.0, 150.0] and fig["layout"]["yaxis"]["range"] == [
        75.0,
        25.0,
    ]
    assert fig["layout"]["dragmode"] == "select" and fig["layout"]["showlegend"] is False
    viewer_only = charts.film_figure(image, shown)
    assert viewer_only.layout.dragmode == "zoom" and viewer_only.layout.showlegend is True


def test_where_wording():
    point, box = Mark(point=(0.246, 0.751)), Mark(box=(0.1, 0.2, 0.35, 0.5))
    assert (
        point.text() == "point 25% across, 75% down"
        and box.text() == "box 10–35% across, 20–50% down"
    )
    assert views.where_text(None, None) == "Where: not marked"
    assert views.where_text(point, None) == "Where: point 25% across, 75% down · not saved yet"
    assert views.where_text(point, point) == "Where: point 25% across, 75% down"
    assert views.where_text(None, point) == "Where: mark cleared, saved without one"
    assert views.mark_hint("box", "Edema") == (
        "Drag a box on the film to mark where you see Edema (Esc: stop)"
    )
    assert views.mark_hint("point", None).startswith("To mark where a finding is: W")


def test_reader_calls_for_adjudication():
    rows = pd.DataFrame(
        {
            "reviewer": ["AB", "CD"],
            "reader_call": ["present", "absent"],
            "confidence": [4, np.nan],
            "reason": ["subtle finding", ""],
            "note": ["left base", None],
            "point_x": [0.25, np.nan],
            "point_y": [0.5, np.nan],
            "box_x0": [np.nan] * 2,
            "box_y0": [np.nan] * 2,
            "box_x1": [np.nan] * 2,
            "box_y1": [np.nan] * 2,
        }
    )
    shown = views.reader_calls_display(rows)
    assert shown.to_dict("records") == [
        {
            "Reader": "AB",
            "Call": "Present",
            "Confidence": "4",
            "Reason": "Subtle finding",
            "Note": "left base",
            "Where": "point 25% across, 50% down",
        },
        {
            "Reader": "CD",
            "Call": "Absent",
            "Confidence": "—",
            "Reason": "—",
            "Note": "",
            "Where": "no mark",
        },
    ]
    hover = views.call_hover(rows.iloc[0].to_dict(), Mark(point=(0.25, 0.5)))
    assert (
        hover
        == "AB: Present · confidence 4 · subtle finding · left base<br>point 25% across, 50% down"
    )
