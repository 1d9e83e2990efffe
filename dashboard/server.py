"""The dashboard's web server: Streamlit's own, plus one fix for page URLs opened directly.

Streamlit's frontend does not know where the server's root is. Opened at a page URL such as
``/performance``, it first tries that path as the root (``/performance/_stcore/health`` and
``/performance/_stcore/host-config``), gets two 404s (the server reserves those names under
every page), waits, then tries ``/`` — so every bookmarked or shared page link logs two errors
in the browser console and starts later. The frontend reads the root from
``window.__streamlit.BACKEND_BASE_URL`` when the hosting page sets it (how Streamlit is embedded
elsewhere); :class:`PageRootMiddleware` sets it in every HTML page the server sends, as the
folder of the page's URL (pages are always one level below the root), so the first request
goes to the right place.
"""

from __future__ import annotations

import streamlit as st
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ROOT_SCRIPT = (
    "<script>window.__streamlit = Object.assign({}, window.__streamlit, "
    "{BACKEND_BASE_URL: new URL(%s, location.href).href});</script>"
)
PAGE_ROOT = '"."'  # a page URL (/performance, /base/performance, /base/): its folder is the root
BARE_ROOT = 'location.pathname + "/"'  # the root without its trailing slash (/base)


def root_script(path: str, base_url_path: str) -> bytes:
    """The script telling the frontend where the root is, for a page requested at ``path``."""
    base = "/" + base_url_path.strip("/")
    bare = base != "/" and path.rstrip("/") == base and not path.endswith("/")
    return (ROOT_SCRIPT % (BARE_ROOT if bare else PAGE_ROOT)).encode()


def with_root_script(html: bytes, script: bytes) -> bytes:
    """``html`` with ``script`` first in its ``<head>`` (before the app's own scripts)."""
    marker = html.find(b"<head>")
    if marker < 0:
        return html
    at = marker + len(b"<head>")
    return html[:at] + script + html[at:]


class PageRootMiddleware:
    """ASGI middleware: tells the frontend of every HTML page where the server's root is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        # Pages are tiny: ask for them uncompressed so the script can be added before sending.
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
        start: Message | None = None
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                html = Headers(raw=message["headers"]).get("content-type", "")
                if not html.startswith("text/html"):
                    await send(message)
                    return
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            script = root_script(scope["path"], str(st.get_option("server.baseUrlPath")))
            page = with_root_script(b"".join(body), script)
            MutableHeaders(raw=start["headers"])["content-length"] = str(len(page))
            await send(start)
            await send({"type": "http.response.body", "body": page})

        await self.app({**scope, "headers": headers}, receive, capture)
