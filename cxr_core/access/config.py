"""How users sign in to the dashboard: the sign-in settings of an install, from one YAML file.

``$CXR_AUTH_CONFIG`` names the file; without it, ``<state folder>/auth.yaml`` is used when it
exists. No file means mode ``none``: a single-user local install, served to this computer only.
Every key::

    mode: oidc                  # none | oidc | local | proxy
    idle_minutes: 30            # signed out after this long without using the page
    # oidc: Streamlit's st.login; the provider's settings and client secret are in
    # .streamlit/secrets.toml [auth] (see the README), never here
    oidc_provider: ""           # the [auth.NAME] section to use; "" for [auth] itself
    identity_claim: email       # which claim of the ID token names the user
    default_role: ""            # role of a signed-in user `cxr users` does not list ("" refuses them)
    # local accounts (cxr users add NAME --role reader)
    max_failed_sign_ins: 5      # failed attempts on one name within lockout_minutes lock it
    lockout_minutes: 15
    # proxy: a reverse proxy (oauth2-proxy, nginx auth_request) signs users in and names them in
    # a header; only requests from trusted_proxies are believed
    proxy_user_header: X-Forwarded-Email
    trusted_proxies: [127.0.0.1]   # addresses or networks (10.0.0.0/24) of the proxies
    proxy_sign_out_url: /oauth2/sign_out

A misspelt key or an impossible value stops the dashboard with a message naming it, rather than
serving patients' films with sign-in silently off.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cxr_core.access.roles import check_role
from cxr_core.errors import AccessDeniedError, ConfigError
from cxr_core.utils.paths import state_dir
from cxr_core.utils.settings import check_known_keys

CONFIG_ENV = "CXR_AUTH_CONFIG"
CONFIG_FILE = "auth.yaml"
MODES: tuple[str, ...] = ("none", "oidc", "local", "proxy")
FORWARDING_HEADERS: tuple[str, ...] = ("x-forwarded-for", "forwarded", "x-real-ip")
"""Headers a reverse proxy adds: a local install (mode none) refuses any request carrying them."""


@dataclass(frozen=True)
class AuthConfig:
    """The sign-in settings of an install (see the module docstring)."""

    mode: str = "none"
    idle_minutes: float = 30.0
    oidc_provider: str = ""
    identity_claim: str = "email"
    default_role: str = ""
    max_failed_sign_ins: int = 5
    lockout_minutes: float = 15.0
    proxy_user_header: str = "X-Forwarded-Email"
    trusted_proxies: tuple[str, ...] = ()
    proxy_sign_out_url: str = ""
    source: str = field(default="", compare=False)  # the file read ("" for the built-in default)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"sign-in mode '{self.mode}' is not one of: {', '.join(MODES)}")
        for name in ("idle_minutes", "lockout_minutes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of minutes, not {value!r}")
        if not isinstance(self.max_failed_sign_ins, int) or self.max_failed_sign_ins < 1:
            raise ConfigError(
                f"max_failed_sign_ins must be a whole number of 1 or more, not {self.max_failed_sign_ins!r}"
            )
        if self.default_role:
            try:
                check_role(self.default_role)
            except AccessDeniedError as exc:
                raise ConfigError(f"default_role: {exc}") from None
        if "_" in self.oidc_provider:
            raise ConfigError(
                f"oidc_provider '{self.oidc_provider}' has an underscore, which Streamlit's "
                "st.login does not accept in a provider name"
            )
        networks = _networks(self.trusted_proxies)
        if self.mode == "proxy" and not networks:
            raise ConfigError(
                "mode proxy needs trusted_proxies: the addresses of the reverse proxies whose "
                f"{self.proxy_user_header} header is believed (e.g. [127.0.0.1])"
            )
        if self.mode == "proxy" and not self.proxy_user_header.strip():
            raise ConfigError("mode proxy needs proxy_user_header (e.g. X-Forwarded-Email)")

    @property
    def signs_in(self) -> bool:
        """True when users sign in (any mode but ``none``)."""
        return self.mode != "none"

    @property
    def idle_seconds(self) -> float:
        return float(self.idle_minutes) * 60.0

    def idle_expired(self, last_active: float, now: float) -> bool:
        """True when a signed-in user has not used the page for longer than ``idle_minutes``."""
        return now - last_active > self.idle_seconds

    def trusts_proxy(self, address: str | None) -> bool:
        """True when ``address`` (the connection's peer) is one of ``trusted_proxies``."""
        ip = _address(address)
        return ip is not None and any(ip in net for net in _networks(self.trusted_proxies))

    def accepts_client(self, address: str | None, headers: Mapping[str, str]) -> bool:
        """Whether a connection from ``address`` (its TCP peer) carrying ``headers`` may be served at all.

        No sign-in: this computer only, and never through a proxy (a proxy would bring every one
        of its users in as this computer). Proxy mode: only the trusted proxies. OpenID Connect
        and local accounts: anyone, who then has to sign in.
        """
        if self.mode == "none":
            lowered = {k.lower() for k in headers}
            ip = _address(address)
            return ip is not None and ip.is_loopback and not lowered & set(FORWARDING_HEADERS)
        if self.mode == "proxy":
            return self.trusts_proxy(address)
        return True


def _address(
    address: str | None,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(str(address).strip())
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return mapped or ip


def _networks(
    entries: Sequence[str],
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    nets = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"trusted_proxies entry '{entry}' is not an IP address or network (e.g. 10.0.0.5 or "
                "10.0.0.0/24); host names are not accepted, as they could change under the server"
            ) from None
    return nets


def auth_config_path() -> Path:
    """The sign-in settings file: ``$CXR_AUTH_CONFIG``, else ``<state folder>/auth.yaml``."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    return Path(env).expanduser() if env else state_dir() / CONFIG_FILE


def load_auth_config(path: str | os.PathLike[str] | None = None) -> AuthConfig:
    """The install's sign-in settings; mode ``none`` when there is no file (and none was named)."""
    named = path is not None or bool(os.environ.get(CONFIG_ENV, "").strip())
    where = Path(path) if path is not None else auth_config_path()
    if not where.is_file():
        if named:
            raise ConfigError(
                f"the sign-in settings file {where} does not exist; create it, or unset {CONFIG_ENV} "
                "for a single-user local install"
            )
        return AuthConfig()
    try:
        data = yaml.safe_load(where.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the sign-in settings file {where}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"the sign-in settings file {where} must hold key: value settings")
    check_known_keys(AuthConfig, {k: v for k, v in data.items()}, "sign-in setting(s)")
    if "source" in data:
        raise ConfigError(f"'source' is not a sign-in setting (in {where})")
    settings = dict(data)
    proxies = settings.get("trusted_proxies", ())
    settings["trusted_proxies"] = (
        (proxies,) if isinstance(proxies, str) else tuple(str(p) for p in proxies or ())
    )
    try:
        return AuthConfig(**settings, source=str(where))
    except TypeError as exc:
        raise ConfigError(f"the sign-in settings file {where}: {exc}") from None
