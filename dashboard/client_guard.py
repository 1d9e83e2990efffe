"""The web server's first check: connections the install's sign-in settings do not accept are refused
before Streamlit sees them (no page, no script, no film), not only by the app's own sign-in page.

A local install (no sign-in) accepts this computer only and never a proxied request; proxy mode
accepts only its trusted proxies (:meth:`cxr_core.access.config.AuthConfig.accepts_client`). HTTP
requests get ``403`` with the reason, WebSocket connections are closed before they open. The
health check stays open (it tells nothing). Settings that cannot be read pass through, so that the
app shows the problem (and serves nothing else).
"""

from __future__ import annotations

from functools import lru_cache

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cxr_core.access.config import AuthConfig, auth_config_path, load_auth_config
from cxr_core.errors import ConfigError

HEALTH_SUFFIX = "/_stcore/health"
REFUSED = {
    "none": "This dashboard is a single-user local install: it has no sign-in, so it serves only the "
    "computer it runs on, and never through a proxy. Configure sign-in to serve a team (README: "
    "'Deploy for a team').",
    "proxy": "This dashboard accepts connections only through its sign-in proxy; open it at the "
    "proxy's address.",
}


@lru_cache(maxsize=4)
def _read(path: str, stamp: float) -> AuthConfig:
    return load_auth_config(path if stamp else None)


def current_config() -> AuthConfig:
    """The sign-in settings, re-read only when their file changes (every request is checked)."""
    path = auth_config_path()
    try:
        stamp = path.stat().st_mtime
    except OSError:
        stamp = 0.0
    return _read(str(path), stamp)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def refusal(config: AuthConfig, scope: Scope) -> str:
    """Why ``scope``'s connection is refused, or "" when it may go on."""
    if scope["type"] not in ("http", "websocket") or scope.get("path", "").endswith(HEALTH_SUFFIX):
        return ""
    client = scope.get("client")
    if config.accepts_client(client[0] if client else None, _headers(scope)):
        return ""
    return REFUSED.get(config.mode, "refused")


class ClientGuard:
    """ASGI middleware applying :func:`refusal` to every request and WebSocket connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            why = refusal(current_config(), scope)
        except ConfigError:
            why = ""  # the app itself shows the settings' problem and serves nothing else
        if not why:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "refused"})
        else:
            await PlainTextResponse(why, status_code=403)(scope, receive, send)
