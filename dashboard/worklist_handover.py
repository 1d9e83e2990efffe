"""The hand-over from the Worklist page to the reading view (the Predict page's viewer).

Opening a film on the worklist puts its bytes in this browser session under :data:`HANDOVER`
and switches page; the Predict page takes them as if the film had been uploaded
(:func:`films_from_worklist`), until the user uploads files of their own. Session state, not the
URL: a film's bytes do not fit in a URL, and another user's session never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

HANDOVER = "cxr_worklist_handover"
PREDICT_PAGE = "predict.py"
"""Relative to the app's main script, the router ``app_pages/router.py`` (``st.switch_page``)."""


@dataclass(frozen=True)
class HandedOverFilm:
    """A film from the worklist, shaped like an uploaded file (``name``, ``getvalue()``)."""

    name: str
    data: bytes

    def getvalue(self) -> bytes:
        return self.data


def open_in_reading_view(name: str, data: bytes) -> None:
    """Hand one film to the Predict page and go there."""
    st.session_state[HANDOVER] = HandedOverFilm(name, data)
    st.switch_page(PREDICT_PAGE)


def films_from_worklist() -> list[HandedOverFilm]:
    """The film handed over by the worklist in this session (empty when none), with a caption."""
    film = st.session_state.get(HANDOVER)
    if not isinstance(film, HandedOverFilm):
        return []
    st.caption(f"Opened from the worklist: **{film.name}** (upload files above to read others).")
    return [film]
