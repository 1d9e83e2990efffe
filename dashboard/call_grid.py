"""The Review page's call grid and reading keys: a Streamlit components-v2 component.

Why a component: fourteen findings with three calls each do not fit beside the film as Streamlit
widgets (a radio and a select per finding made the page ~4,500 px tall), and single keys that act
on the highlighted finding need one key listener that knows the grid. ``assets/call_grid.js``
draws one compact row per finding, the highlighted finding's confidence, reason and note, and the
film's actions; its keys (:data:`KEYS`, listed in its ``?`` overlay) do not fire while the reader
types in a text field. It is plain JavaScript loaded through ``st.components.v2.component`` (no
build step, no ``components.v1.html``).

Events: the ``edits`` state holds every change since the film was shown (``{"token", "seq",
"edits": {finding: {field: value}}}``), so a lost or merged rerun loses nothing; the ``action``
trigger (``{"name", "token", "edits", ...}``) saves, moves, or arms marking where a finding is
(``arm``/``disarm`` with its ``finding``: the film then takes a click or a box drag). A second
mount with ``probe`` data reports the window's size and its own place on the page (``viewport``
state), so the page can size the film to the screen.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import streamlit as st

ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Key:
    """A reading key: the keys that do it (``KeyboardEvent.key`` values), its grid action, what it does."""

    keys: tuple[str, ...]
    action: str
    text: str


KEYS: tuple[Key, ...] = (
    Key(("p",), "present", "Present: the highlighted finding is there (then the next finding)"),
    Key(("a",), "absent", "Absent (then the next finding)"),
    Key(("u",), "unsure", "Unsure (then the next finding)"),
    Key(("n",), "rest_absent", "Every finding not called yet: absent (a normal film)"),
    Key(("ArrowDown", "j"), "down", "Next finding"),
    Key(("ArrowUp", "k"), "up", "Previous finding"),
    Key(
        ("1", "2", "3", "4", "5", "0"),
        "confidence",
        "Confidence 1–5 of the highlighted call (0: none)",
    ),
    Key(("e",), "note", "Type a note on the highlighted finding (Enter or Esc when done)"),
    Key(("w",), "mark", "Mark where the highlighted finding is: click the film, or drag a box"),
    Key(("x",), "clear_mark", "Clear the highlighted finding's mark on the film"),
    Key(("Enter",), "save_next", "Save and go to the next film"),
    Key(("s",), "save", "Save, staying on this film"),
    Key(("ArrowRight",), "next", "Next film (unsaved calls stay as your draft)"),
    Key(("ArrowLeft",), "prev", "Previous film"),
    Key(("o",), "next_open", "Next film you have not read"),
    Key(("?",), "help", "Show or hide this list"),
    Key(("Escape",), "close", "Close this list; stop marking; leave the note or reason field"),
)
HELP_NOTE = (
    "Keys work whenever you are not typing in a text field, also right after a click on a call. "
    "To mark where, press W on the highlighted finding (or its Where button), then click the film "
    "for a point, or choose Box and drag. Calls you have not saved are kept as your "
    "draft (✎) when you leave the film, reload or close the page; only you see them, and they "
    "count nowhere until you save."
)


@dataclass(frozen=True)
class ActionButton:
    """A button under the grid: its action, text, tooltip, and row (0: saving, 1: moving)."""

    name: str
    text: str
    title: str
    row: int
    primary: bool = False


ACTION_BUTTONS: tuple[ActionButton, ...] = (
    ActionButton("save_next", "Save and next", "Save, then the next film (Enter)", 0, True),
    ActionButton("save", "Save", "Save your calls on this film (S)", 0),
    ActionButton("prev", "◀ Prev", "Previous film (←)", 1),
    ActionButton("next", "Next ▶", "Next film (→); unsaved calls stay as your draft", 1),
    ActionButton("next_open", "Next unread", "Next film you have not read (O)", 1),
)

_component = st.components.v2.component(
    "cxr_call_grid",
    js=(ASSETS / "call_grid.js").read_text(encoding="utf-8"),
    css=(ASSETS / "call_grid.css").read_text(encoding="utf-8"),
)


def _ignore() -> None:
    """A state change with nothing to do on the server (Streamlit needs a callback to report a state)."""


def call_grid(
    data: Mapping,
    *,
    key: str,
    on_edits: Callable[[], None],
    on_action: Callable[[], None],
) -> Mapping:
    """Mount the grid with ``data`` (see :func:`dashboard.review_read.grid_data`); returns its state."""
    payload = {
        **data,
        "keys": [asdict(k) for k in KEYS],
        "action_buttons": [asdict(b) for b in ACTION_BUTTONS],
        "help_note": HELP_NOTE,
    }
    return _component(
        key=key,
        data=payload,
        on_edits_change=on_edits,
        on_action_change=on_action,
    )


def viewport_probe(key: str, last: Mapping | None) -> None:
    """Mount the invisible probe where the film's top is: it reports the window's width and height,
    its own top and the column's width (px) as the ``viewport`` state of ``key`` (``last``: what it
    reported before, so it only reports changes)."""
    _component(
        key=key, data={"probe": True, "viewport": dict(last or {})}, on_viewport_change=_ignore
    )
