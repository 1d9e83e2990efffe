"""Drive the Review page's call grid (a components-v2 component, ``dashboard/call_grid.py``) under AppTest.

AppTest runs no JavaScript, so these helpers send what ``call_grid.js`` sends from the browser:
the ``edits`` state (every change since the film was shown) and ``action`` triggers carrying
the edits. They also read the data the page gives the grid, which is what the
reader sees in each row.
"""

from __future__ import annotations

import json

from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

GRID = "rev_grid"
TRIGGERS = "$$STREAMLIT_INTERNAL_KEY_{id}__events"


def _element(at: AppTest, key: str = GRID):
    found = [e for e in at.get("bidi_component") if e.key == key]
    assert found, f"no component with key {key} on the page"
    return found[0]


def data(at: AppTest) -> dict:
    """What the page gave the grid (rows, actions, progress, message)."""
    return json.loads(_element(at).proto.json)


def rows(at: AppTest) -> dict[str, dict]:
    """The grid's rows by finding."""
    return {r["name"]: r for r in data(at)["rows"]}


def _state(at: AppTest) -> dict:
    try:
        value = at.session_state[GRID]
    except KeyError:
        return {}
    return {k: v for k, v in dict(value or {}).items() if k == "edits"}


def _run(at: AppTest, state: dict, trigger: tuple[str, dict] | None = None) -> AppTest:
    element = _element(at)
    states = at._tree.get_widget_states()
    states.widgets.append(WidgetState(id=element.proto.id, json_value=json.dumps(state)))
    if trigger is not None:
        event, value = trigger
        states.widgets.append(
            WidgetState(
                id=TRIGGERS.format(id=element.proto.id),
                json_trigger_value=json.dumps([{"event": event, "value": value}]),
            )
        )
    at._run(states)
    assert not at.exception, [e.value for e in at.exception]
    return at


def _edits(at: AppTest, token: str) -> tuple[int, dict]:
    before = _state(at).get("edits") or {}
    if before.get("token") != token:
        return 0, {}
    return int(before.get("seq", 0)), dict(before.get("edits") or {})


def edit(at: AppTest, changes: dict[str, dict]) -> AppTest:
    """The reader changes calls ({finding: {field: value}}), by mouse or by key."""
    token = data(at)["token"]
    seq, edits = _edits(at, token)
    for finding, fields in changes.items():
        edits[finding] = {**edits.get(finding, {}), **fields}
    state = {**_state(at), "edits": {"token": token, "seq": seq + 1, "edits": edits}}
    return _run(at, state)


def call(at: AppTest, finding: str, value: str, confidence: int | None = None) -> AppTest:
    fields = {"finding": value} | ({"confidence": confidence} if confidence is not None else {})
    return edit(at, {finding: fields})


def act(at: AppTest, name: str, **extra) -> AppTest:
    """The reader presses an action (save, save_next, prev, next, next_open, clear_mark, arm, disarm)."""
    token = data(at)["token"]
    seq, edits = _edits(at, token)
    value = {"name": name, "token": token, "seq": seq, "edits": edits, **extra}
    return _run(at, _state(at), ("action", value))
