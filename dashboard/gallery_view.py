"""The Performance page's gallery: the films behind a clicked number, in a dialog.

A click on a finding's row, a TP/FP/FN/TN cell, a curve point or a confusion-matrix cell stores
a :class:`~cxr_core.evaluation.gallery.GallerySelection` (:func:`open_gallery`); the page then
calls :func:`show_gallery`, which opens a dialog with the films as thumbnails (cached on disk,
:mod:`cxr_core.artifacts.thumbnails`), most wrong first, each with its probability, label,
outcome and the readers' calls. "Heatmap" shows a film with its Grad-CAM++ map; the form at the
bottom starts a review session on exactly these films. Interactions inside the dialog rerun the
dialog alone, not the page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import streamlit as st

from cxr_core.artifacts.catalog import OUTCOMES, CheckpointEntry, EvalRun, resolve_image_path
from cxr_core.artifacts.review_store import MODES
from cxr_core.artifacts.thumbnails import default_thumbnail_dir, thumbnail
from cxr_core.evaluation.gallery import (
    GallerySelection,
    gallery_films,
    reader_calls,
    send_to_review,
)
from cxr_core.inference.explain import DEFAULT_METHOD, overlay
from cxr_core.metrics import EvaluationReport
from dashboard import evaluation_cache, gallery_model, review_media, state
from dashboard.gallery_model import film_caption
from dashboard.views import MODE_LABELS
from dashboard.widgets import cxr_errors

GALLERY = "perf_gallery"
"""Session key: the selection the dialog shows (absent: no gallery open)."""
CLICKS = "perf_gallery_opened"
"""How many galleries were opened: part of the clickable widgets' keys, so that a table or chart
starts with nothing selected again and the same row can be clicked twice."""
FILM = "perf_gallery_film"
PAGE = "perf_gallery_page"
PAGE_SIZE = 50
COLUMNS = 5


@dataclass(frozen=True)
class GalleryContext:
    """What the page knows that the gallery needs: the run, the report whose calls it shows, the
    thresholds in force (a new review session keeps them)."""

    entry: CheckpointEntry
    run: EvalRun
    report: EvaluationReport | None
    multilabel: bool
    thresholds: dict[str, float]
    threshold_set: str


def open_gallery(selection: GallerySelection | None) -> None:
    """Show ``selection``'s films (None leaves the gallery as it is)."""
    if selection is None:
        return
    st.session_state[GALLERY] = selection
    st.session_state[CLICKS] = st.session_state.get(CLICKS, 0) + 1
    st.session_state.pop(FILM, None)
    st.session_state[PAGE] = 0


_SELECTORS = {
    "row": lambda event, report: gallery_model.selection_from_row(
        report, (event.get("rows") or [-1])[0]
    ),
    "cell": lambda event, report: (
        gallery_model.selection_from_cell(report, *event["cells"][0])
        if event.get("cells")
        else None
    ),
    "curve": lambda event: gallery_model.selection_from_curve(event.get("points") or []),
    "confusion": lambda event, classes: gallery_model.selection_from_confusion(
        event.get("points") or [], classes
    ),
}


def open_from(key: str, kind: str, *args: object) -> None:
    """``on_select`` callback of a table or chart: open the gallery of what was clicked (``kind``:
    row, cell, curve or confusion; ``args``: the report, or the class names)."""
    event = (st.session_state.get(key) or {}).get("selection") or {}
    open_gallery(_SELECTORS[kind](event, *args))


def close_gallery() -> None:
    for key in (GALLERY, FILM, PAGE):
        st.session_state.pop(key, None)


def show_gallery(context: GalleryContext) -> None:
    """Open the dialog when a selection is pending; call once per page run, after the page's charts."""
    if st.session_state.get(GALLERY) is not None:
        _dialog(context)


def _film_path(film: pd.Series) -> str | None:
    path = resolve_image_path(film["path"], film["image_id"], state.data_roots())
    return str(path) if path is not None else None


def _outcome_filter(selection: GallerySelection) -> GallerySelection:
    if selection.predicted is not None:
        return selection
    key = f"gal_outcomes@{selection.class_name}@{selection.threshold}"
    if key not in st.session_state:
        st.session_state[key] = list(selection.outcomes)
    picked = st.pills("Outcomes", OUTCOMES, selection_mode="multi", key=key)
    chosen = tuple(o for o in OUTCOMES if o in (picked or []))
    if chosen and chosen != selection.outcomes:
        selection = replace(selection, outcomes=chosen)
        st.session_state[GALLERY] = selection
    return selection


def _heatmap(context: GalleryContext, selection: GallerySelection, film: pd.Series) -> None:
    """The chosen film full width: as it is and with the map of where the finding's evidence lies."""
    path = _film_path(film)
    st.markdown(film_caption(film, class_name=selection.class_name).replace("  \n", " · ", 1))
    if path is None:
        st.warning("This film is not where the run saw it; set the data folder on the Review page.")
        return
    prefetcher = state.prefetcher()
    shown = review_media.display(review_media.image(prefetcher, path).pixels)
    left, right = st.columns(2)
    left.image(shown, caption="film", width="stretch")
    if context.entry.external:
        right.info("Predictions made by another tool: there is no model here to draw a heatmap.")
        return
    with cxr_errors():
        heat = review_media.heatmap(
            prefetcher,
            path,
            review_media.HeatRequest(
                state.predictor(context.entry),
                str(context.entry.model_path),
                selection.class_name,
                DEFAULT_METHOD,
            ),
        )
        right.image(
            overlay(shown.astype(np.float32) / 255.0, heat),
            caption=f"{DEFAULT_METHOD}: where the evidence for {selection.class_name} lies",
            width="stretch",
        )
    st.button("Back to all films", key="gal_back", on_click=st.session_state.pop, args=(FILM, None))


def film_grid(films: pd.DataFrame, calls: dict[str, str], class_name: str = "") -> None:
    """Thumbnails in rows of :data:`COLUMNS`, each with its caption and a Heatmap button."""
    folder = default_thumbnail_dir()
    for start in range(0, len(films), COLUMNS):
        cells = st.columns(COLUMNS)
        for cell, (_, film) in zip(cells, films.iloc[start : start + COLUMNS].iterrows()):
            path = _film_path(film)
            small = thumbnail(path, folder) if path else None
            if small is not None:
                cell.image(str(small), width="stretch")
            else:
                cell.caption(f"{film['image_id']}: image not found")
            cell.caption(film_caption(film, calls.get(film["image_id"], ""), class_name))
            cell.button(
                "Heatmap",
                key=f"gal_heat@{film['image_id']}",
                on_click=st.session_state.__setitem__,
                args=(FILM, film["image_id"]),
                width="stretch",
            )


def _send_form(context: GalleryContext, selection: GallerySelection, films: pd.DataFrame) -> None:
    with st.form("gal_send", border=True):
        st.markdown(f"**Send these {len(films)} films to a new review session**")
        left, right = st.columns(2)
        name = left.text_input("Session name", value=selection.describe(), key="gal_send_name")
        mode = right.selectbox("Reading mode", MODES, format_func=MODE_LABELS.get, key="gal_mode")
        if st.form_submit_button("Start the review session", type="primary"):
            with cxr_errors():
                session = send_to_review(
                    state.review_store(),
                    str(context.entry.dir),
                    context.run.split,
                    selection,
                    films["image_id"].tolist(),
                    name=name,
                    mode=mode,
                    thresholds=context.thresholds,
                    threshold_set=context.threshold_set,
                )
                st.success(
                    f"Review session “{session.name}” started with {len(films)} films: open it on the "
                    "Review page."
                )


@st.dialog("Films behind the number", width="large", on_dismiss=close_gallery)
def _dialog(context: GalleryContext) -> None:
    selection = _outcome_filter(st.session_state[GALLERY])
    with cxr_errors():
        calls = evaluation_cache.decisions(context.run, context.report, context.multilabel)
        films = gallery_films(context.run, selection, calls)
        readers = reader_calls(
            state.review_store(),
            str(context.entry.dir),
            context.run,
            selection.class_name,
            viewer=state.reader(),
            multilabel=context.multilabel,
        )
        st.caption(
            f"{selection.describe()} · {len(films)} films, most wrong first (by how far the "
            "probability is from the label)"
            + (
                " · calls as the table counts them: out of fold"
                if selection.threshold is None and context.report and context.report.crossfitted
                else ""
            )
        )
        chosen = st.session_state.get(FILM)
        if chosen in set(films["image_id"]):
            _heatmap(context, selection, films[films["image_id"] == chosen].iloc[0])
            return
        pages = max(1, -(-len(films) // PAGE_SIZE))
        page = min(int(st.session_state.get(PAGE, 0)), pages - 1)
        if pages > 1:
            page = st.selectbox(
                "Films",
                range(pages),
                index=page,
                format_func=lambda p: f"{p * PAGE_SIZE + 1}–{min((p + 1) * PAGE_SIZE, len(films))}",
                key=PAGE,
            )
        film_grid(
            films.iloc[page * PAGE_SIZE : (page + 1) * PAGE_SIZE], readers, selection.class_name
        )
        if len(films):
            _send_form(context, selection, films)
