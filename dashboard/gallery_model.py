"""What a click on the Performance page opens: Streamlit selection events -> gallery selections,
and the text under each thumbnail.

Streamlit reports a table row, a table cell or a chart point as plain data; these functions turn
it into a :class:`~cxr_core.evaluation.gallery.GallerySelection` (or None when the click names no
films, e.g. an average row), so the page only wires events to the gallery.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cxr_core.evaluation.gallery import GallerySelection
from cxr_core.metrics import EvaluationReport
from dashboard.performance_tables import OUTCOME_COLUMNS
from dashboard.tables import fmt

ERRORS = ("FP", "FN")
"""What a point on a curve opens: the films that threshold gets wrong."""
LABEL_WORDS = {1.0: "present", 0.0: "absent"}


def selection_from_row(report: EvaluationReport, row: int) -> GallerySelection | None:
    """A per-finding table row: every film of that finding, at the report's calls."""
    names = list(report.per_class)
    return GallerySelection(names[row]) if 0 <= row < len(names) else None


def selection_from_cell(report: EvaluationReport, row: int, column: str) -> GallerySelection | None:
    """A count cell (TP / FP / FN / TN of a finding): those films. Other cells of that table open
    nothing (a finding's row, in the table above, opens all its films)."""
    names = list(report.per_class)
    if not 0 <= row < len(names) or column not in OUTCOME_COLUMNS.values():
        return None
    return GallerySelection(names[row], (column,))


def selection_from_curve(points: Sequence[Mapping]) -> GallerySelection | None:
    """A point of an ROC or PR curve (or an operating-point marker): the errors at its threshold.

    Curve points carry ``customdata = [threshold, class name]``; the curve's start at +inf has no
    threshold and opens nothing.
    """
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 2 and data[0] is not None:
            threshold = float(data[0])
            if np.isfinite(threshold):
                return GallerySelection(str(data[1]), ERRORS, threshold=threshold)
    return None


def selection_from_confusion(
    points: Sequence[Mapping], classes: Sequence[str]
) -> GallerySelection | None:
    """A multiclass confusion-matrix cell (y = true class, x = predicted): those films."""
    for point in points:
        true, predicted = point.get("y"), point.get("x")
        if true in classes and predicted in classes:
            return GallerySelection(str(true), predicted=str(predicted))
    return None


def film_caption(film: Mapping, calls: str = "", class_name: str = "") -> str:
    """Under a thumbnail: the film, its probability for ``class_name``, its label and outcome (in a
    multiclass cell, what it was called), and the readers' calls when there are any."""
    p = f"p({class_name})" if class_name else "p"
    if str(film["outcome"]).startswith("called "):
        what = f"true {class_name} · {film['outcome']}"
    else:
        what = f"label {LABEL_WORDS.get(float(film['label']), 'unknown')} · {film['outcome']}"
    text = f"{film['image_id']}  \n{p} {fmt(film['prob'], 2)} · {what}"
    return text + (f"  \nreaders: {calls}" if calls else "")
