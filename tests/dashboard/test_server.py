"""The page-root middleware: every HTML page tells Streamlit's frontend where the server root is."""

from __future__ import annotations

import asyncio

from dashboard.server import PageRootMiddleware, root_script, with_root_script

PAGE = b"<!DOCTYPE html><html><head><title>x</title></head><body></body></html>"


def _serve(path: str, body: bytes, content_type: bytes, headers: list | None = None):
    """Run the middleware around a one-response app; (response messages, headers the app saw)."""
    seen: dict = {}

    async def app(scope, receive, send):
        seen["headers"] = scope["headers"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})

    sent: list = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "path": path, "headers": headers or []}
    asyncio.run(PageRootMiddleware(app)(scope, receive, send))
    return sent, seen["headers"]


def test_pages_get_the_root_script_first_in_their_head_and_a_correct_length():
    sent, seen = _serve("/performance", PAGE, b"text/html", [(b"accept-encoding", b"gzip")])
    start, body = sent
    script = root_script("/performance", "")
    assert body["body"] == with_root_script(PAGE, script)
    assert body["body"].index(script) == PAGE.index(b"<head>") + len(b"<head>")
    assert dict(start["headers"])[b"content-length"] == str(len(body["body"])).encode()
    assert seen == []  # asked uncompressed, so the script can be added


def test_other_responses_pass_through_untouched():
    sent, _ = _serve("/static/js/app.js", b"console.log('x')" * 3, b"text/javascript")
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"console.log('x')" * 3


def test_the_root_is_the_pages_folder_except_at_a_bare_base_path():
    assert b'new URL("."' in root_script("/", "")
    assert b'new URL("."' in root_script("/review", "")
    assert b'new URL("."' in root_script("/cxr/", "cxr")
    assert b'new URL("."' in root_script("/cxr/review", "cxr")
    assert b'location.pathname + "/"' in root_script("/cxr", "cxr")
    assert with_root_script(b"no head here", b"<script></script>") == b"no head here"
