"""The Review page's Read view: where a reader is in a session, what the call grid shows, what its
events do, and the page address that follows the reader.

Presentation and session state only: calls, drafts and saving go through
:mod:`cxr_core.evaluation.reading`, positions through the review store. Every change a reader
makes is a draft in the store at once, so nothing here holds unsaved work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import streamlit as st

from cxr_core.access import roles
from cxr_core.artifacts.review_store import REASONS, ReviewSession, ReviewStore
from cxr_core.errors import AccessDeniedError, CXRError
from cxr_core.evaluation.reading import (
    FindingCall,
    apply_edits,
    change,
    film_calls,
    save_film,
)
from cxr_core.evaluation.review import next_unreviewed, resume_index
from dashboard import marks, state, views
from dashboard.tables import fmt

GRID = "rev_grid"
PROBE = "rev_viewport"
MESSAGE = "rev_grid_message"
RERUN = "rev_grid_rerun"
MARK_SEQ = "rev_mark_seq"
MARK_FOR = "rev_mark_for"
URL_FILM = "rev_url_film"
SESSION_PARAM, FILM_PARAM = "session", "film"
NO_READER = (
    "Enter your name as Reader in the sidebar before calling: every verdict says who gave it."
)
FILM_HEIGHT = 430
"""Film height (px) before the browser has reported the window: fits a 1024 x 768 screen."""
CAPTION_ROOM = 72
"""Below the film: the film's line (image, patient), the caption and the page's bottom margin (px)."""


def _pos_key(session_id: int, reader: str) -> str:
    return f"rev_pos@{session_id}@{reader}"


def go(store: ReviewStore, session_id: int, reader: str, queue: Sequence[str], index: int) -> None:
    """Move this reader to film ``index`` (kept per reader, by film, so filter changes do not lose it)."""
    if not queue:
        return
    index = int(min(max(index, 0), len(queue) - 1))
    st.session_state[_pos_key(session_id, reader)] = (index, queue[index])
    if reader:
        try:
            store.save_position(session_id, index, reviewer=reader, image_id=queue[index])
        except CXRError as exc:
            st.session_state[MESSAGE] = str(exc)


def position(store: ReviewStore, session_id: int, reader: str, queue: Sequence[str]) -> int:
    """The film this reader is on: the film a link asked for (once), else where they were in this
    browser, else where the store says they stopped."""
    wanted = st.session_state.pop(URL_FILM, None)
    if wanted in queue:
        go(store, session_id, reader, queue, list(queue).index(wanted))
    key = _pos_key(session_id, reader)
    saved = st.session_state.get(key) or (
        store.reader_position(session_id, reader) if reader else None
    )
    index = resume_index(queue, saved)
    st.session_state[key] = (index, queue[index])
    return index


def link_request(session_key: str) -> tuple[int | None, str | None]:
    """(session id, film) the page address asks for, while this browser session has no choice in the
    session picker (``session_key``): on a fresh tab or a reload, and again whenever Streamlit has
    dropped the picker's state (it drops a widget's state after a run that did not draw it). The address
    then still names the session and film the reader had open, so the page goes back to them."""
    if session_key in st.session_state:
        return None, None
    raw, film = st.query_params.get(SESSION_PARAM), st.query_params.get(FILM_PARAM)
    try:
        session_id = int(raw) if raw is not None else None
    except ValueError:
        session_id = None
    return session_id, (film or None)


def open_link(session_id: int, film: str | None, session_key: str) -> None:
    """Open a linked session (and film) in this browser session."""
    st.session_state[session_key] = session_id
    if film:
        st.session_state[URL_FILM] = film


def keep_in_url(session_id: int, image_id: str | None = None) -> None:
    """Mirror the open session and, in the Read view, its film into the address (``?session=3&film=…``),
    so it can be shared or bookmarked and a reload comes back here. One message for both, so the
    address never names the session without its film in between."""
    changed = {
        name: value
        for name, value in {SESSION_PARAM: str(session_id), FILM_PARAM: image_id}.items()
        if value and st.query_params.get(name) != value
    }
    if changed:
        st.query_params.update(changed)
    if image_id is None and FILM_PARAM in st.query_params:
        del st.query_params[FILM_PARAM]


def forget_link() -> None:
    """Take the session and film out of the address. Only for a reader's own choice to leave the session
    (a picker callback): a page run never does it, since a run may not know the picker's value."""
    for name in (SESSION_PARAM, FILM_PARAM):
        if name in st.query_params:
            del st.query_params[name]


@dataclass(frozen=True)
class Reading:
    """One reader on one film of a session: what the call grid and its events need."""

    store: ReviewStore
    session: ReviewSession
    reader: str
    queue: tuple[str, ...]
    index: int
    cases: pd.DataFrame
    """The film's rows of :func:`cxr_core.evaluation.review.film_cases` (one per finding with a label)."""
    reviewed: frozenset[str]
    revealed: bool
    multilabel: bool

    @property
    def image_id(self) -> str:
        return self.queue[self.index]

    @property
    def token(self) -> str:
        """Names this reader's grid on this film: events from another film or session are ignored."""
        return f"{self.session.id}@{self.reader}@{self.image_id}"

    @cached_property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cases["class_name"])

    def calls(self) -> list[FindingCall]:
        """The film's calls as they stand now (read from the store: another tab may have changed them)."""
        if not self.reader:
            return film_calls(self.classes, (), (), self.image_id)
        sid, image_id = self.session.id, self.image_id
        return film_calls(
            self.classes,
            self.store.verdicts(sid, reviewer=self.reader, image_id=image_id),
            self.store.drafts(sid, self.reader, image_id),
            image_id,
            revealed=self.revealed,
        )

    @staticmethod
    def focus(calls: Sequence[FindingCall]) -> FindingCall:
        """The finding highlighted when the film opens: the first still to call."""
        open_ = [c for c in calls if c.call.finding is None and not c.frozen]
        return (open_ or list(calls))[0]

    def armed(self) -> str | None:
        """The finding whose "where" the film takes next (a click or a box drag), if the reader armed one.

        Only then does the film carry its click grid, which is costly to draw on every film."""
        token, finding = st.session_state.get(MARK_FOR) or (None, None)
        return finding if token == self.token and finding in self.classes else None


def _mark_of(source) -> marks.Mark | None:
    return marks.stored(source.point, source.box) if source is not None else None


def _row(reading: Reading, fc: FindingCall, case, show_model: bool, show_label: bool) -> dict:
    call, saved = fc.call, fc.saved
    current, kept = marks.stored(call.point, call.box), _mark_of(saved)
    row = {
        "name": fc.class_name,
        "finding": call.finding,
        "confidence": call.confidence,
        "reason": call.reason,
        "note": call.note,
        "unsaved": fc.unsaved,
        "frozen": fc.frozen,
        "mark": None if current is None else ("box" if current.box is not None else "point"),
        "mark_unsaved": current is not None and current != kept,
        "where": views.where_text(current, kept),
        "saved_text": _saved_text(saved, show_model),
    }
    if show_model:
        called = "present" if case.model_positive else "absent"
        row["model"] = f"{fmt(case.prob)} {'+' if case.model_positive else '−'}"
        row["model_title"] = f"model {fmt(case.prob)}" + (
            f" (threshold {case.threshold:.3f}) → {called}" if reading.multilabel else ""
        )
    if show_label:
        row["label"] = "+" if case.label == 1 else "−"
    if show_model and show_label:
        row["outcome"] = str(case.outcome)
    return row


def _saved_text(saved, show_model: bool) -> str:
    if saved is None:
        return "Not saved yet"
    text = f"Saved {saved.updated[11:19]} UTC"
    if show_model:
        text += (
            f" · your call {views.CALL_LABELS.get(saved.finding, '?')} → "
            f"{views.VERDICT_LABELS.get(saved.verdict, '')}"
        )
    return text


def grid_data(
    reading: Reading,
    calls: Sequence[FindingCall],
    show_model: bool,
    show_label: bool,
    drafted: set[str],
    message: str = "",
) -> dict:
    """What the call grid shows for this reader on this film (see :mod:`dashboard.call_grid`)."""
    cases = {r.class_name: r for r in reading.cases.itertuples(index=False)}
    n, index = len(reading.queue), reading.index
    upcoming = next_unreviewed(reading.queue, set(reading.reviewed), index)
    done = reading.image_id in reading.reviewed
    refusal = call_refusal()
    readonly = not reading.reader or bool(refusal) or all(c.frozen for c in calls)
    return {
        "token": reading.token,
        "film": reading.image_id,
        "rows": [_row(reading, c, cases[c.class_name], show_model, show_label) for c in calls],
        "focus": reading.focus(calls).class_name,
        "armed": reading.armed(),
        "show_model": show_model,
        "show_label": show_label,
        "readonly": readonly,
        "reasons": [[r, views.reason_label(r)] for r in REASONS],
        "progress": views.read_progress(index, n, len(reading.reviewed), len(drafted)),
        "state": "saved" if done else "new",
        "state_text": "✓ Saved" if done else "Not saved yet",
        "draft_text": "✎ Draft: unsaved, kept for you",
        "message": message or refusal or (NO_READER if not reading.reader else ""),
        "actions": {
            "prev": index > 0,
            "next": index < n - 1,
            "next_open": upcoming is not None and upcoming != index,
            "save": not readonly,
            "save_next": not readonly,
            "clear_mark": not readonly,
        },
    }


def call_refusal() -> str:
    """Why this session's user may not call films (the store's own words), or "" when they may:
    a role without call rights gets the grid read only, not buttons the store would refuse."""
    try:
        state.actor().require(roles.CALL)
    except AccessDeniedError as exc:
        return f"{exc}. Read only: you can look at films and move between them."
    return ""


def take_message(rerun: bool) -> str:
    """The grid's message for the reader; kept for the page's rerun when one follows (else it would flash)."""
    return st.session_state.get(MESSAGE, "") if rerun else st.session_state.pop(MESSAGE, "")


def _apply(reading: Reading, event: Mapping | None) -> list[FindingCall] | None:
    """The film's calls after the edits an event carries (None, with a message, when they were refused)."""
    if not isinstance(event, Mapping) or event.get("token") != reading.token:
        return None
    if not reading.reader:
        st.session_state[MESSAGE] = NO_READER
        return None
    edits = event.get("edits")
    try:
        return apply_edits(
            reading.store,
            reading.session.id,
            reading.image_id,
            reading.reader,
            reading.calls(),
            edits if isinstance(edits, Mapping) else {},
        )
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)
        return None


def on_edits(reading: Reading) -> None:
    """Grid callback: keep what the reader changed as their draft."""
    _apply(reading, (st.session_state.get(GRID) or {}).get("edits"))


def on_action(reading: Reading) -> None:
    """Grid callback: save or move (the edits the action carries are kept first); the page then reruns."""
    event = (st.session_state.get(GRID) or {}).get("action")
    calls = _apply(reading, event)
    if calls is None and reading.reader:
        return
    st.session_state[RERUN] = True
    name = event.get("name")
    if name in ("save", "save_next"):
        _save(reading, calls, advance=name == "save_next")
    elif name == "clear_mark" and calls:
        target = [c for c in calls if c.class_name == event.get("finding")]
        _change_mark(reading, target[0] if target else reading.focus(calls), None)
    elif name == "arm" and calls:
        _arm(reading, calls, event.get("finding"))
    elif name == "disarm":
        st.session_state.pop(MARK_FOR, None)
    elif name in ("prev", "next", "next_open"):
        _move(reading, name)


def _arm(reading: Reading, calls: Sequence[FindingCall], finding: object) -> None:
    """Let the next click or box drag on the film mark where ``finding`` is."""
    target = [c for c in calls if c.class_name == finding]
    if not target:
        return
    if target[0].frozen:
        st.session_state[MESSAGE] = (
            f"{finding} cannot be marked: you revealed this blinded session before calling it."
        )
        return
    st.session_state[MARK_FOR] = (reading.token, target[0].class_name)


def _move(reading: Reading, name: str) -> None:
    index = reading.index
    target = {
        "prev": index - 1,
        "next": index + 1,
        "next_open": next_unreviewed(reading.queue, set(reading.reviewed), index),
    }[name]
    if target is not None:
        go(reading.store, reading.session.id, reading.reader, reading.queue, target)


def _save(reading: Reading, calls: list[FindingCall] | None, advance: bool) -> None:
    if not reading.reader or calls is None:
        st.session_state[MESSAGE] = NO_READER
        return
    try:
        result = save_film(
            reading.store,
            reading.session.id,
            reading.image_id,
            reading.reader,
            calls,
            reading.cases,
        )
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)
        return
    message = result.message()
    if advance and result.complete:
        if reading.index < len(reading.queue) - 1:
            go(reading.store, reading.session.id, reading.reader, reading.queue, reading.index + 1)
        else:
            message = message or "Saved. This was the last film of the queue."
    if message:
        st.session_state[MESSAGE] = message


def _change_mark(reading: Reading, target: FindingCall, mark: marks.Mark | None) -> None:
    try:
        change(
            reading.store,
            reading.session.id,
            reading.image_id,
            reading.reader,
            target,
            point=mark.point if mark else None,
            box=mark.box if mark else None,
        )
    except CXRError as exc:
        st.session_state[MESSAGE] = str(exc)


def on_mark(reading: Reading, chart_key: str, width: int, height: int) -> None:
    """Film callback: a click or a box drag marks where the armed finding is (kept as a draft);
    marking then stops, so the next films are drawn without the click grid."""
    mark = marks.from_selection(
        (st.session_state.get(chart_key) or {}).get("selection"), width, height
    )
    finding = reading.armed()
    if mark is None or finding is None:
        return
    if not reading.reader:
        st.session_state[MESSAGE] = NO_READER
        return
    target = [c for c in reading.calls() if c.class_name == finding]
    _change_mark(reading, target[0], mark)
    st.session_state.pop(MARK_FOR, None)
    st.session_state[MARK_SEQ] = st.session_state.get(MARK_SEQ, 0) + 1


def drawn_marks(calls: Sequence[FindingCall], colours: Sequence[str]) -> list[tuple]:
    """(finding, mark, colour, saved) of every mark on the film as it stands, in the grid's order."""
    out = []
    for i, fc in enumerate(calls):
        current = marks.stored(fc.call.point, fc.call.box)
        if current is not None:
            saved = current == _mark_of(fc.saved)
            out.append((fc.class_name, current, colours[i % len(colours)], saved))
    return out


def viewport() -> Mapping | None:
    """The window size and the film's top (px) the probe reported, once it has (None before)."""
    seen = (st.session_state.get(PROBE) or {}).get("viewport")
    return seen if isinstance(seen, Mapping) else None


def film_height(viewport: Mapping | None, shape: tuple[int, ...], max_height: int) -> int:
    """The film's height (px): the room left under the film's top on this screen, and no taller than
    the film is at the column's width (so no empty band shows under it)."""
    if not viewport:
        return FILM_HEIGHT
    room = int(viewport.get("height", 0)) - int(viewport.get("top", 0)) - CAPTION_ROOM
    width = int(viewport.get("column", 0)) or room
    return int(max(220, min(room, max_height, width * shape[0] / shape[1])))


def column_weights(viewport: Mapping | None, show_model: bool) -> list[float]:
    """Film and grid column weights: on a narrow screen the grid keeps the width its rows need."""
    narrow = viewport is None or int(viewport.get("width", 0)) < 1200
    if narrow:
        return [1.0, 1.1] if show_model else [1.2, 1.0]
    return [1.45, 1.0] if show_model else [1.9, 1.0]
