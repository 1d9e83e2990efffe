"""The web server's first check (dashboard.client_guard): refused connections never reach Streamlit."""

from __future__ import annotations

import asyncio

import pytest

from dashboard import client_guard


def _call(scope: dict) -> tuple[list[dict], bool]:
    """(messages the guard sent, whether the app behind it was called)."""
    sent: list[dict] = []
    reached = []

    async def app(scope, receive, send) -> None:
        reached.append(True)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(client_guard.ClientGuard(app)(scope, receive, send))
    return sent, bool(reached)


def scope(kind: str, address: str, path: str = "/", headers: dict[str, str] | None = None) -> dict:
    return {
        "type": kind,
        "path": path,
        "client": (address, 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "method": "GET",
    }


@pytest.fixture
def settings(tmp_path, monkeypatch):
    def write(text: str | None) -> None:
        path = tmp_path / "auth.yaml"
        if text is None:
            monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "state"))
            monkeypatch.delenv("CXR_AUTH_CONFIG", raising=False)
            return
        path.write_text(text)
        monkeypatch.setenv("CXR_AUTH_CONFIG", str(path))

    return write


def test_a_local_install_serves_this_computer_only(settings) -> None:
    settings(None)
    assert _call(scope("http", "127.0.0.1")) == ([], True)
    sent, reached = _call(scope("http", "192.0.2.2", "/review"))
    assert not reached and sent[0]["status"] == 403
    assert b"single-user local install" in sent[1]["body"]
    sent, reached = _call(scope("websocket", "192.0.2.2", "/_stcore/stream"))
    assert not reached and sent == [{"type": "websocket.close", "code": 1008, "reason": "refused"}]
    sent, reached = _call(scope("http", "127.0.0.1", headers={"X-Forwarded-For": "203.0.113.5"}))
    assert not reached and sent[0]["status"] == 403
    assert _call(scope("http", "192.0.2.2", "/_stcore/health"))[1]  # the health check stays open


def test_proxy_mode_serves_its_trusted_proxies_only(settings) -> None:
    settings("mode: proxy\ntrusted_proxies: [10.0.0.0/24]\n")
    assert _call(scope("websocket", "10.0.0.9", headers={"X-Forwarded-Email": "a@b.org"}))[1]
    sent, reached = _call(scope("http", "192.0.2.2", headers={"X-Forwarded-Email": "a@b.org"}))
    assert not reached and b"only through its sign-in proxy" in sent[1]["body"]


def test_signed_in_modes_let_everyone_reach_the_sign_in_page(settings) -> None:
    settings("mode: local\n")
    assert _call(scope("http", "198.51.100.7"))[1]


def test_unreadable_settings_pass_through_to_the_app_that_reports_them(settings) -> None:
    settings("mode: nonsense\n")
    assert _call(scope("http", "192.0.2.2"))[1]
