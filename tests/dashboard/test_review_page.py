"""The Review page under Streamlit's AppTest, against small real checkpoint directories.

The call grid is a components-v2 component; ``grid_driver`` sends what its JavaScript sends from
the browser (edits, focus, actions) and reads what the page gives it. Numbers are checked against
scikit-learn; every save is checked in the review store.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from cxr_core.artifacts.review_store import LEGACY_READER, ReviewStore
from cxr_core.errors import ReviewStoreError
from dashboard import state
from tests.checkpoint_fixtures import IMAGE_SIZE, build_catalog
from tests.dashboard import grid_driver as grid

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
SELECTED = "cxr_selected_checkpoint"
READER = "cxr_reader"
REVEAL = "Reveal labels and model output (ends your blinded reading in this session)"
SESSION_VIEWS = ("Agreement", "Adjudicate", "Corrected metrics")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("review_page")
    return {**build_catalog(root), "root": root}


@pytest.fixture
def env(catalog, tmp_path, monkeypatch) -> Path:
    """Point the app at the fixture checkpoints, a private review DB and the fixture images."""
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(catalog["root"] / "checkpoints"))
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "review"))
    monkeypatch.setenv("CXR_DATA_ROOT", str(catalog["root"] / "data"))
    return tmp_path


def as_reader(name: str | None, checkpoint: Path, **params: str) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "review.py"), default_timeout=TIMEOUT)
    at.session_state[SELECTED] = str(checkpoint.resolve())
    if name:
        at.session_state[READER] = name
    for key, value in params.items():
        at.query_params[key] = value
    return at


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def film_markdown(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Image**"))


def film(at: AppTest) -> str:
    return film_markdown(at).split("`")[1]


def start_session(at: AppTest, name: str, mode: str, classes: list[str] | None = None) -> AppTest:
    at.text_input(key="rev_new_name").input(name)
    at.selectbox(key="rev_new_mode").set_value(mode)
    if classes is not None:
        at.multiselect(key="rev_new_classes").set_value(classes)
    at.run()
    at.button(key="rev_start").click().run()
    no_exceptions(at)
    return at


def join(at: AppTest, session_id: int) -> AppTest:
    at.selectbox(key="rev_session_pick").set_value(session_id).run()
    no_exceptions(at)
    return at


def press(at: AppTest, label: str) -> AppTest:
    at.button[[b.label for b in at.button].index(label)].click().run()
    no_exceptions(at)
    return at


def shown_table(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def predictions(checkpoint: Path) -> pd.DataFrame:
    return pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")


def page_text(at: AppTest) -> str:
    return " ".join(
        e.value for kind in (at.markdown, at.caption, at.info, at.warning, at.error) for e in kind
    )


def test_review_two_readers_never_overwrite_each_other(env, catalog):
    at = as_reader("AB", catalog["tiny_a"]).run()
    no_exceptions(at)
    assert not at.warning  # named reader, images reachable through CXR_DATA_ROOT
    start_session(at, "chest team", "unblinded", ["Atelectasis", "Cardiomegaly"])
    store = ReviewStore(env / "review")
    (session,) = store.sessions()
    assert (session.mode, session.classes) == ("unblinded", ("Atelectasis", "Cardiomegaly"))
    assert set(session.filters["thresholds"]) == {"Atelectasis", "Cardiomegaly", "Pleural Effusion"}
    rows = grid.rows(at)
    assert list(rows) == ["Atelectasis", "Cardiomegaly"]
    assert all(r["finding"] is None for r in rows.values())  # nothing pre-selected
    first = film(at)
    grid.call(at, "Atelectasis", "present", confidence=4)
    grid.act(at, "save_next")  # Cardiomegaly not called: stays on the film
    assert (
        film(at) == first and "still to call on this film: Cardiomegaly" in grid.data(at)["message"]
    )
    grid.call(at, "Cardiomegaly", "absent")
    grid.act(at, "save_next")
    assert film(at) != first
    assert (
        grid.data(at)["progress"].startswith("Film 2 / ")
        and "· 1 read" in grid.data(at)["progress"]
    )
    mine = {v.class_name: v for v in store.verdicts(session.id, reviewer="AB")}
    assert (mine["Atelectasis"].finding, mine["Atelectasis"].confidence) == ("present", 4)
    assert mine["Atelectasis"].verdict in {"agree", "model_wrong", "label_wrong"}
    assert store.reader_position(session.id, "AB") == (1, film(at))
    assert store.drafts(session.id, "AB") == []  # saved calls are no longer drafts

    other = join(as_reader("CD", catalog["tiny_a"]).run(), session.id)  # another browser and reader
    assert film(other) == first  # CD starts at their own position
    assert all(r["finding"] is None for r in grid.rows(other).values())  # AB's calls not shown
    grid.call(other, "Atelectasis", "unsure")
    grid.call(other, "Cardiomegaly", "absent")
    grid.act(other, "save")
    both = {
        v.reviewer: v.finding
        for v in store.verdicts(session.id)
        if v.image_id == first and v.class_name == "Atelectasis"
    }
    assert both == {"AB": "present", "CD": "unsure"}
    assert "✓ reviewed by you" in film_markdown(other)
    assert "your call Unsure" in grid.rows(other)["Atelectasis"]["saved_text"]
    grid.call(other, "Atelectasis", "absent")  # CD changes their own call; history keeps both
    grid.act(other, "save")
    assert [v.finding for v in store.history(session.id, first, "Atelectasis", "CD")] == [
        "unsure",
        "absent",
    ]
    assert store.verdict(session.id, first, "Atelectasis", "AB").finding == "present"

    other.radio(key="rev_view").set_value("Agreement").run()
    no_exceptions(other)
    assert not [b for b in other.button if b.key == "rev_reveal"]  # unblinded: open
    between = shown_table(other, "Between")["Between"].tolist()
    assert "AB vs CD" in between and "AB vs dataset label" in between
    assert {r["reviewer"] for r in store.export_rows(session.id)} == {"AB", "CD"}

    fresh = join(as_reader("AB", catalog["tiny_a"]).run(), session.id)  # AB reloads: resumes
    assert film(fresh) != first
    fresh.selectbox(key="rev_order").set_value("lowest probability first").run()
    no_exceptions(fresh)  # a filter change keeps the film
    assert store.reader_position(session.id, "AB")[1] == film(fresh)


def test_unsaved_calls_are_a_private_draft_kept_when_the_reader_leaves(env, catalog):
    """Calls made and not saved survive moving away, a reload and a second reader; they count nowhere."""
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "drafts", "blind_all", ["Atelectasis", "Cardiomegaly", "Pleural Effusion"])
    (session,) = store.sessions()
    first = film(at)
    grid.call(at, "Atelectasis", "present", confidence=3)
    grid.edit(
        at, {"Cardiomegaly": {"finding": "unsure", "note": "hilar haze", "reason": "image quality"}}
    )
    rows = grid.rows(at)
    assert rows["Atelectasis"]["unsaved"] and rows["Cardiomegaly"]["note"] == "hilar haze"
    assert grid.data(at)["progress"].endswith("· 1 with drafts")
    grid.act(at, "next")  # leaves the film without saving
    assert film(at) != first and all(not r["unsaved"] for r in grid.rows(at).values())
    assert any(o.startswith("✎ 1 · ") for o in at.selectbox(key="rev_film_pick").options)

    back = join(as_reader("AB", catalog["tiny_a"]).run(), session.id)  # a reload, on the next film
    grid.act(back, "prev")
    assert film(back) == first
    rows = grid.rows(back)
    assert (rows["Atelectasis"]["finding"], rows["Atelectasis"]["confidence"]) == ("present", 3)
    assert (rows["Cardiomegaly"]["finding"], rows["Cardiomegaly"]["reason"]) == (
        "unsure",
        "image quality",
    )
    assert rows["Pleural Effusion"]["finding"] is None and not rows["Pleural Effusion"]["unsaved"]
    assert grid.data(back)["focus"] == "Pleural Effusion"  # the first finding still to call

    other = join(as_reader("CD", catalog["tiny_a"]).run(), session.id)  # same film, other reader
    assert film(other) == first
    assert all(r["finding"] is None and not r["unsaved"] for r in grid.rows(other).values())
    assert store.verdicts(session.id) == [] and store.readers(session.id) == []
    other.radio(key="rev_view").set_value("Agreement").run()
    assert "Closed while you read blinded" in other.info[0].value  # AB's drafts read nothing

    grid.call(back, "Pleural Effusion", "absent")
    grid.act(back, "save")
    saved = {v.class_name: v.finding for v in store.verdicts(session.id, reviewer="AB")}
    assert saved == {
        "Atelectasis": "present",
        "Cardiomegaly": "unsure",
        "Pleural Effusion": "absent",
    }
    assert store.drafts(session.id, "AB") == [] and grid.data(back)["state"] == "saved"


def test_a_change_back_to_the_saved_call_is_not_a_draft(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "undo", "unblinded", ["Atelectasis"])
    (session,) = store.sessions()
    grid.call(at, "Atelectasis", "absent")
    grid.act(at, "save")
    grid.call(at, "Atelectasis", "present")
    assert grid.rows(at)["Atelectasis"]["unsaved"] and len(store.drafts(session.id, "AB")) == 1
    grid.call(at, "Atelectasis", "absent")
    assert not grid.rows(at)["Atelectasis"]["unsaved"] and store.drafts(session.id, "AB") == []


def test_a_link_opens_the_session_and_film_and_the_address_follows_the_reader(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    assert "session" not in at.query_params
    start_session(at, "linked", "blind_labels", ["Atelectasis"])
    (session,) = store.sessions()
    assert at.query_params["session"] == str(session.id)
    assert at.query_params["film"] == film(at)
    grid.act(at, "next")
    grid.act(at, "next")
    third = film(at)
    assert at.query_params["film"] == third
    at.radio(key="rev_view").set_value("Agreement").run()
    assert at.query_params["session"] == str(session.id) and "film" not in at.query_params

    opened = as_reader("CD", catalog["tiny_a"], session=str(session.id), film=third).run()
    no_exceptions(opened)  # a fresh browser session with the link: that session and film
    assert opened.selectbox(key="rev_session_pick").value == session.id and film(opened) == third
    assert store.reader_position(session.id, "CD")[1] == third
    grid.act(opened, "prev")  # afterwards the reader moves as usual
    assert film(opened) != third and opened.query_params["film"] == film(opened)

    missing = as_reader("CD", catalog["tiny_a"], session="999").run()
    no_exceptions(missing)
    assert "review session 999, which is not in" in missing.warning[0].value
    other_ckpt = as_reader("CD", catalog["tiny_b"], session=str(session.id)).run()
    assert "read on" in other_ckpt.info[0].value
    other_ckpt.button(key="rev_link_switch").click().run()
    no_exceptions(other_ckpt)
    assert other_ckpt.session_state[SELECTED] == str(catalog["tiny_a"].resolve())
    assert other_ckpt.selectbox(key="rev_session_pick").value == session.id


def test_a_run_that_ends_above_the_session_picker_keeps_the_link_and_the_film(
    env, catalog, monkeypatch
):
    """A run that ends on an error shown above the session picker (the router shows a library error
    and the run completes) makes Streamlit drop the picker's state. The next run must go back to the
    session and film the address names, not fall back to "New session…" and take them out of the
    address (a reload then opened "New session…"); only the reader's own choice of it does that."""
    store = ReviewStore(env / "review")
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=TIMEOUT)
    at.session_state[SELECTED] = str(catalog["tiny_a"].resolve())
    at.query_params["reader"] = "AB"
    at.switch_page("review.py").run()
    start_session(at, "kept", "blind_all", ["Atelectasis"])
    (session,) = store.sessions()
    grid.act(at, "next")
    second = film(at)
    real = state.eval_run
    monkeypatch.setattr(
        state, "eval_run", lambda *a: (_ for _ in ()).throw(ReviewStoreError("busy"))
    )
    at.run()
    assert [e.value for e in at.error] == ["busy"]
    monkeypatch.setattr(state, "eval_run", real)
    at.run()
    no_exceptions(at)
    assert at.selectbox(key="rev_session_pick").value == session.id and film(at) == second
    assert (at.query_params["session"], at.query_params["film"]) == (str(session.id), second)

    at.selectbox(key="rev_session_pick").set_value(0).run()  # the reader leaves: New session…
    no_exceptions(at)
    assert "session" not in at.query_params and "film" not in at.query_params


def test_review_blinded_mode_reveals_after_saving(env, catalog):
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "blind", "blind_all", ["Atelectasis"])
    data = grid.data(at)
    assert not data["show_model"] and not data["show_label"]
    assert (
        "model" not in grid.rows(at)["Atelectasis"] and "label" not in grid.rows(at)["Atelectasis"]
    )
    assert "Heatmap hidden until you save" in page_text(at)
    assert not [s for s in at.selectbox if s.key == "rev_method"]  # no heatmap either
    assert not [s for s in at.selectbox if s.key == "rev_focus"]  # no outcome filters
    at.select_slider(key="rev_zoom").set_value(2.0).run()
    no_exceptions(at)
    assert (
        at.select_slider(key="rev_zoom").value == 2.0 and not at.slider(key="rev_zoom_x").disabled
    )
    grid.call(at, "Atelectasis", "present")
    grid.act(at, "save")
    row = grid.rows(at)["Atelectasis"]
    assert row["model"].startswith("0.") and row["label"] in {"+", "−"} and row["outcome"]

    lab = as_reader("CD", catalog["tiny_a"]).run()
    start_session(lab, "labels hidden", "blind_labels", ["Atelectasis"])
    row = grid.rows(lab)["Atelectasis"]
    assert "model 0." in row["model_title"] and "label" not in row


def assert_closed(at: AppTest, left: int, films: int) -> None:
    """Every session view shows why it is closed and the reader's films left, and nothing of any film."""
    for name in SESSION_VIEWS:
        at.radio(key="rev_view").set_value(name).run()
        no_exceptions(at)
        text = page_text(at)
        assert "Closed while you read blinded" in at.info[0].value, name
        assert f"You have **{left} of {films} films** left to read" in at.info[0].value, name
        assert not at.dataframe and not at.get("download_button") and not at.get("plotly_chart"), (
            name
        )
        for hidden in ("dataset label **", "model **", "Corrected label"):
            assert hidden not in text, (name, hidden)
        assert (
            at.button(key="rev_reveal").label == REVEAL and not at.button(key="rev_reveal").disabled
        )


def test_review_blinded_session_views_open_only_after_a_reveal(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "blind", "blind_all", ["Atelectasis"])
    (session,) = store.sessions()
    films = sorted(
        {
            str(f)
            for f in predictions(catalog["tiny_a"]).dropna(subset=["label:Atelectasis"])["image_id"]
        }
    )
    first = film(at)
    grid.call(at, "Atelectasis", "present")
    grid.act(at, "save")
    store.record(session.id, first, "Atelectasis", reviewer="CD", finding="present")
    assert_closed(at, len(films) - 1, len(films))
    assert store.revealed_at(session.id, "AB") is None

    press(at, REVEAL)  # still on Corrected metrics
    assert store.revealed_at(session.id, "AB") is not None
    assert shown_table(at, "Corrected labels").iloc[0]["Finding"].startswith("Atelectasis")
    assert "Open to you since you revealed the labels and model output on" in page_text(at)
    at.radio(key="rev_view").set_value("Agreement").run()
    assert "AB vs CD" in shown_table(at, "Between")["Between"].tolist() and at.get(
        "download_button"
    )

    at.radio(key="rev_view").set_value("Read").run()
    grid.act(
        at, "next_open"
    )  # a film AB had not read: shown, but a call on it could not be blinded
    assert "You revealed the labels and model output of this session on" in page_text(at)
    data = grid.data(at)
    assert data["show_model"] and data["show_label"] and data["readonly"]
    assert data["rows"][0]["frozen"] and not data["actions"]["save"]
    picker = at.selectbox(key="rev_film_pick")
    picker.set_value(next(i for i, label in enumerate(picker.options) if first in label)).run()
    assert film(at) == first and grid.data(at)["actions"]["save"]  # own earlier call: may change
    grid.call(at, "Atelectasis", "absent")
    grid.act(at, "save")
    assert [v.finding for v in store.history(session.id, first, "Atelectasis", "AB")] == [
        "present",
        "absent",
    ]

    again = join(as_reader("AB", catalog["tiny_a"]).run(), session.id)  # the reveal is stored
    again.radio(key="rev_view").set_value("Adjudicate").run()
    no_exceptions(again)
    assert shown_table(again, "Readers' calls")["Film"].tolist() == [first]
    other = join(as_reader("CD", catalog["tiny_a"]).run(), session.id)  # CD is still blinded
    assert_closed(other, len(films) - 1, len(films))
    nobody = join(as_reader(None, catalog["tiny_a"]).run(), session.id)
    nobody.radio(key="rev_view").set_value("Agreement").run()
    assert "Enter your name as **Reader**" in nobody.info[0].value
    assert nobody.button(key="rev_reveal").disabled


def test_review_blinded_session_views_open_once_every_film_is_read(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "labels hidden", "blind_labels", ["Atelectasis", "Cardiomegaly"])
    (session,) = store.sessions()
    last = film(at)
    frame = predictions(catalog["tiny_a"])
    known = {
        c: set(frame.loc[frame[f"label:{c}"].notna(), "image_id"].astype(str))
        for c in ("Atelectasis", "Cardiomegaly")
    }
    films = sorted(known["Atelectasis"] | known["Cardiomegaly"])
    for f in films:
        for class_name in ("Atelectasis", "Cardiomegaly"):
            if f != last and f in known[class_name]:
                store.record(session.id, f, class_name, reviewer="AB", finding="absent")
    assert_closed(at, 1, len(films))
    at.radio(key="rev_view").set_value("Read").run()
    grid.edit(at, {c: {"finding": "present"} for c in grid.rows(at)})
    grid.act(at, "save")
    at.radio(key="rev_view").set_value("Agreement").run()
    no_exceptions(at)
    assert "Open to you: you have saved your calls on every film" in page_text(at)
    assert "AB vs dataset label" in shown_table(at, "Between")["Between"].tolist()
    assert store.revealed_at(session.id, "AB") is None  # opened by reading, not by a reveal


def test_review_needs_a_reader_name(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader(None, catalog["tiny_a"]).run()
    start_session(at, "anon", "unblinded", ["Atelectasis"])
    assert "Reader" in at.warning[0].value
    data = grid.data(at)
    assert data["readonly"] and not data["actions"]["save"] and "Enter your name" in data["message"]
    grid.call(at, "Atelectasis", "present")  # a call sent anyway is refused, not stored as anyone's
    assert "Enter your name as Reader" in grid.data(at)["message"]
    assert store.verdicts() == [] and store.drafts(1, "") == []


def test_review_adjudication_and_corrected_metrics(env, catalog):
    store = ReviewStore(env / "review")
    a = as_reader("A", catalog["tiny_a"]).run()
    start_session(a, "adj", "blind_all", ["Atelectasis"])
    (session,) = store.sessions()
    first = film(a)
    for reader, value in (("A", "present"), ("B", "absent")):
        at = join(as_reader(reader, catalog["tiny_a"]).run(), session.id)
        grid.call(at, "Atelectasis", value)
        grid.act(at, "save")
    at.radio(key="rev_view").set_value("Adjudicate").run()
    press(at, REVEAL)  # B adjudicates before reading the other films
    listed = shown_table(at, "Readers' calls")
    assert listed.iloc[0]["Readers' calls"] == "A: present, B: absent"
    assert listed.iloc[0]["Majority"] == "tie"
    at.radio(key="rev_adj_label").set_value("present")
    press(at, "Record final label")
    (decided,) = store.adjudications(session.id)
    assert (decided.image_id, decided.label, decided.adjudicator) == (first, 1, "B")
    at.radio(key="rev_view").set_value("Corrected metrics").run()
    no_exceptions(at)
    table = shown_table(at, "Corrected labels")
    atelectasis = table[table["Finding"] == "Atelectasis"].set_index("Metric")
    frame = predictions(catalog["tiny_a"])
    known = frame["label:Atelectasis"].notna()
    auroc = atelectasis.loc["AUROC", "Original labels"]  # "0.812 (0.70 to 0.90)": value (95% CI)
    assert float(auroc.split(" (")[0]) == pytest.approx(
        roc_auc_score(frame.loc[known, "label:Atelectasis"], frame.loc[known, "prob:Atelectasis"]),
        abs=5e-4,
    )
    assert "–" in auroc
    truth = frame.set_index("image_id").loc[first, "label:Atelectasis"]
    changed = 0 if truth == 1 else 1
    assert any(
        f"Atelectasis: threshold 0.500, {changed} label(s) changed" in c.value for c in at.caption
    )
    positives = atelectasis.loc["Positives"]
    assert int(positives["Corrected labels"]) - int(positives["Original labels"]) == changed


def plotly_traces(at: AppTest, key_prefix: str) -> list[dict]:
    """The traces of the first Plotly chart whose element id carries ``key_prefix`` (AppTest has no accessor),
    with x and y as lists (Plotly sends numpy arrays as base64 typed arrays)."""
    import base64

    chart = next(c for c in at.get("plotly_chart") if key_prefix in c.proto.id)
    traces = json.loads(chart.proto.spec)["data"]
    for trace in traces:
        for axis in ("x", "y"):
            if isinstance(trace.get(axis), dict):
                encoded = trace[axis]
                trace[axis] = np.frombuffer(
                    base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"]
                ).tolist()
    return traces


def select_on_film(at: AppTest, selection: dict) -> AppTest:
    """A click (a grid point) or a box drag on the film, as Plotly reports it to Streamlit."""
    chart = next(c for c in at.get("plotly_chart") if "rev_where" in c.proto.id)
    states = at._tree.get_widget_states()
    states.widgets.append(
        WidgetState(id=chart.proto.id, string_value=json.dumps({"selection": selection}))
    )
    at._run(states)
    no_exceptions(at)
    return at


def test_review_mark_on_the_film_is_a_draft_saved_with_the_call_and_drawn(env, catalog):
    """A click marks the highlighted finding, a box drag the next one; Save stores them with the calls."""
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "where", "blind_all", ["Atelectasis", "Cardiomegaly"])
    store = ReviewStore(env / "review")
    (session,) = store.sessions()
    first = film(at)
    assert at.radio(key="rev_mark_by").value == "point"
    assert [t["type"] for t in plotly_traces(at, "rev_where")] == ["image"]  # no click grid yet
    assert grid.data(at)["focus"] == "Atelectasis" and grid.data(at)["armed"] is None
    grid.act(at, "arm", finding="Atelectasis")  # W, or the row's where button
    traces = plotly_traces(at, "rev_where")
    assert [t["type"] for t in traces] == ["image", "scatter"]  # the film and its click grid
    width = IMAGE_SIZE  # the fixture films are square
    assert len(traces[1]["x"]) == 64 * 64 and max(traces[1]["x"]) < width
    assert grid.data(at)["armed"] == "Atelectasis" and "Atelectasis (Esc: stop)" in page_text(at)
    select_on_film(at, {"points": [{"curve_number": 1, "x": 16.0, "y": 48.0}], "box": []})
    assert grid.data(at)["armed"] is None  # one mark, then the film is drawn without the grid
    assert [t["type"] for t in plotly_traces(at, "rev_where")][:1] == ["image"]
    at.radio(key="rev_mark_by").set_value("box").run()
    grid.act(at, "arm", finding="Cardiomegaly")
    select_on_film(at, {"points": [], "box": [{"x": [57.6, 32.0], "y": [6.4, 25.6]}]})
    grid.act(at, "arm", finding="Atelectasis")
    grid.act(at, "disarm")  # Esc
    assert grid.data(at)["armed"] is None
    rows = grid.rows(at)
    assert rows["Atelectasis"]["where"] == "Where: point 25% across, 75% down · not saved yet"
    assert rows["Cardiomegaly"]["where"] == "Where: box 50–90% across, 10–40% down · not saved yet"
    assert rows["Atelectasis"]["mark"] == "point" and rows["Cardiomegaly"]["mark_unsaved"]
    assert [d.point for d in store.drafts(session.id, "AB")] == [(0.25, 0.75), None]  # kept
    grid.call(at, "Atelectasis", "present")
    grid.call(at, "Cardiomegaly", "absent")
    grid.act(at, "save")
    mine = {v.class_name: v for v in store.verdicts(session.id, reviewer="AB")}
    assert (mine["Atelectasis"].point, mine["Atelectasis"].box) == ((0.25, 0.75), None)
    assert mine["Cardiomegaly"].box == pytest.approx((0.5, 0.1, 0.9, 0.4))
    assert grid.rows(at)["Atelectasis"]["where"] == "Where: point 25% across, 75% down"
    drawn = {t["name"]: t for t in plotly_traces(at, "rev_where")[1:]}  # no grid: not armed
    assert set(drawn) == {"Atelectasis", "Cardiomegaly"}
    assert drawn["Atelectasis"]["x"] == [0.25 * width]
    assert drawn["Atelectasis"]["marker"]["line"]["dash"] == "solid"  # saved: solid
    grid.act(at, "clear_mark", finding="Atelectasis")
    assert grid.rows(at)["Atelectasis"]["where"] == "Where: mark cleared, saved without one"
    grid.act(at, "save")
    assert store.verdict(session.id, first, "Atelectasis", "AB").point is None
    assert [v.point for v in store.history(session.id, first, "Atelectasis", "AB")] == [
        (0.25, 0.75),
        None,
    ]
    assert store.verdict(session.id, first, "Cardiomegaly", "AB").box is not None  # kept


def test_review_adjudication_shows_the_film_with_each_readers_mark(env, catalog):
    store = ReviewStore(env / "review")
    at = as_reader("ADJ", catalog["tiny_a"]).run()
    start_session(at, "marks", "blind_all", ["Atelectasis", "Cardiomegaly"])
    (session,) = store.sessions()
    first = film(at)
    for cls in ("Atelectasis", "Cardiomegaly"):
        store.record(
            session.id, first, cls, reviewer="A", finding="present", confidence=4, point=(0.25, 0.5)
        )
        store.record(
            session.id,
            first,
            cls,
            reviewer="B",
            finding="absent",
            box=(0.5, 0.5, 0.75, 0.75),
            note="clear",
        )
    at.radio(key="rev_view").set_value("Adjudicate").run()
    press(at, REVEAL)  # an adjudicator who never reads
    assert at.selectbox(key="rev_adj_pick").options == [
        f"{first} · Atelectasis",
        f"{first} · Cardiomegaly",
    ]
    calls_shown = shown_table(at, "Where")
    assert calls_shown[["Reader", "Call", "Confidence", "Where"]].values.tolist() == [
        ["A", "Present", "4", "point 25% across, 50% down"],
        ["B", "Absent", "—", "box 50–75% across, 50–75% down"],
    ]
    traces = plotly_traces(at, "rev_adj_film")
    assert [t["type"] for t in traces] == ["image", "scatter", "scatter"]  # no click grid here
    marks_by = {t["name"]: t for t in traces[1:]}
    quarter = IMAGE_SIZE / 4
    assert marks_by["A"]["x"] == [quarter]
    assert marks_by["B"]["x"] == [2 * quarter, 3 * quarter, 3 * quarter, 2 * quarter, 2 * quarter]
    assert "A: Present · confidence 4" in marks_by["A"]["hovertext"]
    assert "clear" in marks_by["B"]["hovertext"]
    # the second finding is picked, then decided: the adjudication lands on it
    at.selectbox(key="rev_adj_pick").set_value(1).run()
    at.radio(key="rev_adj_label").set_value("present")
    press(at, "Record final label")
    assert [(a.class_name, a.label, a.adjudicator) for a in store.adjudications(session.id)] == [
        ("Cardiomegaly", 1, "ADJ")
    ]


def test_review_migrated_verdicts_show_under_an_explicit_reader_name(env, catalog):
    """A single-reader database (empty reader names) on this checkpoint: its verdicts appear, named, everywhere."""
    from tests.review_fixtures import old_database

    frame = predictions(catalog["tiny_a"])
    films = frame["image_id"].astype(str).tolist()[:6]
    old = ["agree" if i % 2 else "model_wrong" for i in range(6)]
    old_database(
        env / "review",
        "INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position) VALUES "
        f"('before readers', '{catalog['tiny_a'].resolve()}', 'val', '{{}}', '2026-12-01T20:05:11.120+00:00', 0);"
        "INSERT INTO verdicts VALUES "
        + ", ".join(
            f"(1, '{f}', 'Atelectasis', '{v}', '', '', '2026-12-01T20:1{i}:00.000+00:00')"
            for i, (f, v) in enumerate(zip(films, old))
        )
        + ";",
    )
    store = ReviewStore(env / "review")
    for f in films:
        store.record(1, f, "Atelectasis", reviewer="CD", finding="present")
    at = join(as_reader("CD", catalog["tiny_a"]).run(), 1)
    assert f"readers so far: CD, {LEGACY_READER}" in " ".join(c.value for c in at.caption)
    at.radio(key="rev_view").set_value("Agreement").run()
    no_exceptions(at)
    between = shown_table(at, "Between")["Between"].tolist()
    assert f"CD vs {LEGACY_READER}" in between and f"{LEGACY_READER} vs dataset label" in between
    at.radio(key="rev_view").set_value("Adjudicate").run()
    no_exceptions(at)
    listed = shown_table(at, "Readers' calls")
    assert len(listed) >= 1
    assert listed["Readers' calls"].str.contains(f"{LEGACY_READER}: ", regex=False).all()
    assert LEGACY_READER in shown_table(at, "Where")["Reader"].tolist()


def test_review_without_reachable_images_says_how_to_fix(env, catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_DATA_ROOT", str(tmp_path / "nowhere"))
    at = as_reader("AB", catalog["tiny_a"]).run()
    start_session(at, "no images", "unblinded")
    no_exceptions(at)
    assert "not reachable" in at.warning[0].value and "Data root" in at.warning[0].value
    assert grid.rows(at)  # the calls can still be made
