"""Sign-in under Streamlit's AppTest (the router, real review database, local accounts): nothing but the
sign-in page before signing in, failed and good sign-ins audited, roles re-read on every run, idle
sign-out and the sign-out button clearing the session; a local install says what it is."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cxr_core.artifacts.review_store import ReviewStore
from dashboard import auth
from tests.checkpoint_fixtures import build_catalog

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("auth_app")
    build_catalog(root)
    return root


@pytest.fixture
def team(catalog, tmp_path, monkeypatch) -> ReviewStore:
    """Local accounts: an admin and a reader; sign-in settings with a 10-minute idle time."""
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(catalog / "checkpoints"))
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "state"))
    config = tmp_path / "auth.yaml"
    config.write_text("mode: local\nidle_minutes: 10\nmax_failed_sign_ins: 3\n")
    monkeypatch.setenv("CXR_AUTH_CONFIG", str(config))
    store = ReviewStore(tmp_path / "state")
    store.users.add(store.actor, "ada", "admin", PASSWORD)
    store.users.add(store.actor, "rita", "reader", PASSWORD)
    return store


def router() -> AppTest:
    return AppTest.from_file(str(REPO_ROOT / "app_pages" / "router.py"), default_timeout=120)


def sign_in(at: AppTest, name: str, password: str) -> AppTest:
    at.text_input(key="cxr_sign_in_name").input(name)
    at.text_input(key="cxr_sign_in_password").input(password)
    return at.button[0].click().run()


def signed_in_text(at: AppTest) -> str:
    return " ".join(m.value for m in at.sidebar.markdown if "Signed in as" in m.value)


def test_before_sign_in_there_is_only_the_sign_in_form(team) -> None:
    at = router().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["CXR classifier dashboard"]
    assert [t.label for t in at.text_input] == ["Name", "Password"]
    assert not at.sidebar.markdown and not at.get("file_uploader") and not at.selectbox
    assert "cxr_actor" not in at.session_state


def test_a_wrong_password_is_refused_and_audited_then_the_right_one_signs_in(team) -> None:
    at = sign_in(router().run(), "rita", "not her password")
    assert [e.value for e in at.error] == ["Wrong name or password"]
    assert "cxr_actor" not in at.session_state
    at = sign_in(at, "Rita", PASSWORD)
    assert not at.exception
    assert "Signed in as **rita**" in signed_in_text(
        at
    ) and "reader · local account" in signed_in_text(at)
    assert not [
        t for t in at.sidebar.text_input if t.label == "Reader"
    ]  # no typed name when signed in
    events = [(e.action, e.actor) for e in reversed(team.audit.entries())][2:]
    assert events == [("sign_in_failed", "rita"), ("sign_in", "rita")]


def test_a_role_change_or_removal_applies_at_the_next_run(team) -> None:
    at = sign_in(router().run(), "rita", PASSWORD)
    team.users.set_role(team.actor, "rita", "adjudicator")
    at.run()
    assert at.session_state["cxr_actor"].role == "adjudicator"
    team.users.remove(team.actor, "rita")
    at.run()
    assert "cxr_actor" not in at.session_state
    assert [t.label for t in at.text_input] == ["Name", "Password"]


def test_idle_time_signs_out_and_forgets_the_session(team) -> None:
    at = sign_in(router().run(), "ada", PASSWORD)
    at.session_state["cxr_predict_marker"] = "films of the last user"
    at.session_state[auth.LAST_ACTIVE] = time.time() - 11 * 60
    at.run()
    assert "cxr_actor" not in at.session_state and "cxr_predict_marker" not in at.session_state
    assert [i.value for i in at.info] == ["You were signed out after 10 minutes without activity."]
    last = team.audit.entries()[0]
    assert (last.action, last.actor, last.detail) == (
        "sign_out",
        "ada",
        {"why": "signed out after 10 minutes without activity"},
    )


def test_the_sign_out_button_signs_out(team) -> None:
    at = sign_in(router().run(), "ada", PASSWORD)
    at.sidebar.button(key="cxr_sign_out").click().run()
    assert "cxr_actor" not in at.session_state
    assert [t.label for t in at.text_input] == ["Name", "Password"]
    assert team.audit.entries()[0].action == "sign_out"


def test_a_local_install_says_it_serves_this_computer_only(catalog, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(catalog / "checkpoints"))
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CXR_AUTH_CONFIG", raising=False)
    at = router().run()
    assert not at.exception
    assert any("Single-user local install" in c.value for c in at.sidebar.caption)
    assert [t.label for t in at.sidebar.text_input][:1] == ["Reader"]


def test_unsafe_server_settings_are_named(monkeypatch) -> None:
    options = {
        "server.enableXsrfProtection": False,
        "server.enableCORS": True,
        "server.maxUploadSize": 200,
    }
    monkeypatch.setattr(auth.st, "get_option", options.__getitem__)
    problems = auth.server_problems()
    assert len(problems) == 2
    assert problems[0].startswith("server.enableXsrfProtection is off")
    assert problems[1] == "server.maxUploadSize is 200 MB, above the 64 MB a film may have"
