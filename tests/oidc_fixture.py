"""A real OpenID Connect provider on localhost for the sign-in tests: ``oidc-provider-mock`` (PyPI).

It is a full provider (discovery document, authorization endpoint with a consent page, token and
userinfo endpoints, signed ID tokens, end-session endpoint) built with Authlib, run in a thread of
the test process on a free port. Its consent page lists the predefined users as buttons; pressing
one signs that user in. Any client id and secret are accepted. When the package is not installed or
the server does not answer its discovery document, the test is skipped with the reason.

:func:`streamlit_secrets` writes the ``[auth]`` section Streamlit's ``st.login`` reads, as a
deployment would in ``.streamlit/secrets.toml``, with a client secret and cookie secret the tests
then look for in logs and pages.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

CLIENT_ID = "cxr-dashboard"


@dataclass(frozen=True)
class Provider:
    """A running provider: its issuer URL and the users its consent page offers (sub -> claims)."""

    issuer: str
    users: Mapping[str, Mapping[str, str]]

    @property
    def metadata_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"


@contextmanager
def oidc_provider(users: Mapping[str, Mapping[str, str]]) -> Iterator[Provider]:
    """The provider, serving ``users`` (sub -> claims such as ``email``), stopped at the end."""
    try:
        import oidc_provider_mock as mock
    except ImportError:
        pytest.skip("oidc-provider-mock is not installed (pip install -r requirements-dev.txt)")
    predefined = [mock.User(sub=sub, claims=dict(claims)) for sub, claims in users.items()]
    try:
        server_context = mock.run_server_in_thread(port=0, user_claims=predefined)
        server = server_context.__enter__()
    except OSError as exc:
        pytest.skip(f"the OpenID Connect provider could not start: {exc}")
    try:
        provider = Provider(f"http://localhost:{server.server_port}", dict(users))
        try:
            with urllib.request.urlopen(provider.metadata_url, timeout=30) as response:
                json.loads(response.read())
        except (OSError, ValueError) as exc:
            pytest.skip(
                f"the OpenID Connect provider does not answer its discovery document: {exc}"
            )
        yield provider
    finally:
        server_context.__exit__(None, None, None)


def streamlit_secrets(path: Path, provider: Provider, app_url: str) -> dict[str, str]:
    """Write the ``[auth]`` secrets of a dashboard at ``app_url`` signing in with ``provider``;
    returns them (the tests check that none of them ever shows)."""
    values = {
        "redirect_uri": f"{app_url}/oauth2callback",
        "cookie_secret": secrets.token_hex(32),
        "client_id": CLIENT_ID,
        "client_secret": "oidc-client-secret-" + secrets.token_hex(12),
        "server_metadata_url": provider.metadata_url,
    }
    path.write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items()))
    path.chmod(0o600)
    return values
