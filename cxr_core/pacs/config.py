"""Where the PACS is and how to log in: from the command line, a config file or the environment.

The password is never a command-line option (the process list shows arguments to every user)
and never appears in a message or log line: :class:`PacsConfig` leaves it out of its ``repr``,
messages name the server by :func:`redacted_url`, and a URL with credentials inside it is
refused. It comes from ``CXR_PACS_PASSWORD`` or from the config file (YAML or JSON)::

    url: https://pacs.example.org/dicom-web
    username: cxr
    password: ...            # or password_file: /run/secrets/pacs
    ca_bundle: /etc/ssl/hospital-ca.pem   # TLS: the CA that signed the server's certificate
    client_cert: /etc/cxr/client.pem      # optional mutual TLS
    client_key: /etc/cxr/client.key
    timeout_s: 30

Precedence, highest first: command line, config file, environment (``CXR_PACS_URL``,
``CXR_PACS_USER``, ``CXR_PACS_PASSWORD``, ``CXR_PACS_CA_BUNDLE``, ``CXR_PACS_CONFIG`` naming the
file). A config file holding a password that other users can read is used, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

from cxr_core.errors import ConfigError
from cxr_core.utils.settings import check_known_keys

logger = logging.getLogger(__name__)

ENV_PREFIX = "CXR_PACS_"
_ENV_KEYS = {
    "url": "URL",
    "username": "USER",
    "password": "PASSWORD",
    "ca_bundle": "CA_BUNDLE",
}


@dataclass(frozen=True)
class PacsConfig:
    """One DICOMweb server and the credentials and TLS settings to reach it."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    password_file: str = ""
    ca_bundle: str = ""
    verify_tls: bool = True
    client_cert: str = ""
    client_key: str = ""
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"the PACS URL {redacted_url(self.url)!r} is not an http(s) address; give the "
                "DICOMweb root, e.g. https://pacs.example.org/dicom-web"
            )
        if parts.username or parts.password:
            raise ConfigError(
                f"the PACS URL {redacted_url(self.url)} has credentials inside it, where logs and "
                "the process list would show them; set the user name with --user or in the config "
                f"file and the password in {ENV_PREFIX}PASSWORD or the config file"
            )
        if self.password and not self.username:
            raise ConfigError("a PACS password was given without a user name")
        if self.timeout_s <= 0:
            raise ConfigError(f"the PACS timeout must be positive, not {self.timeout_s}")

    @property
    def display_url(self) -> str:
        return redacted_url(self.url)


def redacted_url(url: str) -> str:
    """``url`` without any user name, password, query or fragment: safe to log or show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return "<unparseable URL>"


def _read_file(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the PACS config file {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"the PACS config file {path} must hold key: value settings")
    check_known_keys(PacsConfig, data, "PACS setting(s)")
    if data.get("password") and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning(
            "the PACS config file %s holds a password and other users can read it; "
            "restrict it with chmod 600",
            path,
        )
    return dict(data)


def _password_from_file(config: PacsConfig) -> PacsConfig:
    if not config.password_file:
        return config
    try:
        secret = Path(config.password_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the PACS password file {config.password_file}: {exc}"
        ) from None
    return replace(config, password=secret, password_file="")


def load_pacs_config(
    *,
    url: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    username: str | None = None,
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PacsConfig:
    """The PACS settings from the command line (``url``, ``username``, ``overrides``), the config
    file and the environment, in that order of precedence (see the module docstring)."""
    env = os.environ if environ is None else environ
    settings: dict[str, object] = {
        key: env[ENV_PREFIX + name] for key, name in _ENV_KEYS.items() if env.get(ENV_PREFIX + name)
    }
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        settings.update(_read_file(Path(path)))
    given = {"url": url, "username": username, **(overrides or {})}
    settings.update({k: v for k, v in given.items() if v not in (None, "")})
    if not settings.get("url"):
        raise ConfigError(
            f"no PACS given: pass --url, set {ENV_PREFIX}URL, or name a config file with --config"
        )
    if "timeout_s" in settings:
        try:
            settings["timeout_s"] = float(settings["timeout_s"])  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(
                f"the PACS timeout {settings['timeout_s']!r} is not a number"
            ) from None
    if isinstance(settings.get("verify_tls"), str):
        settings["verify_tls"] = str(settings["verify_tls"]).lower() not in ("false", "0", "no")
    return _password_from_file(PacsConfig(**settings))
