"""Sign-in settings: the default is a local install; bad settings stop the server with a message."""

from __future__ import annotations

import pytest

from cxr_core.access.config import AuthConfig, load_auth_config
from cxr_core.errors import ConfigError


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CXR_AUTH_CONFIG", raising=False)
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "state"))
    return tmp_path


def test_no_file_means_a_single_user_local_install(no_env) -> None:
    config = load_auth_config()
    assert config.mode == "none" and not config.signs_in and config.source == ""


def test_the_state_folder_file_is_read(no_env) -> None:
    (no_env / "state").mkdir()
    (no_env / "state" / "auth.yaml").write_text("mode: local\nidle_minutes: 5\n")
    config = load_auth_config()
    assert (config.mode, config.idle_seconds) == ("local", 300.0)
    assert config.source.endswith("auth.yaml")


def test_a_named_file_that_is_missing_is_an_error(no_env, monkeypatch) -> None:
    monkeypatch.setenv("CXR_AUTH_CONFIG", str(no_env / "nowhere.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_auth_config()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: ldap\n", "sign-in mode 'ldap' is not one of"),
        ("mode: local\nidle_minute: 5\n", "unknown sign-in setting"),
        ("mode: proxy\n", "mode proxy needs trusted_proxies"),
        ("mode: proxy\ntrusted_proxies: [proxy.example.org]\n", "host names are not accepted"),
        ("mode: oidc\ndefault_role: boss\n", "default_role"),
        ("mode: local\nidle_minutes: 0\n", "positive number of minutes"),
        ("mode: oidc\noidc_provider: my_idp\n", "underscore"),
    ],
)
def test_bad_settings_are_refused(no_env, text: str, message: str) -> None:
    path = no_env / "auth.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_auth_config(path)


def test_a_local_install_serves_this_computer_only_and_never_through_a_proxy() -> None:
    local = AuthConfig()
    assert local.accepts_client("127.0.0.1", {}) and local.accepts_client("::1", {})
    assert local.accepts_client("::ffff:127.0.0.1", {})
    assert not local.accepts_client("192.0.2.2", {})
    assert not local.accepts_client(None, {})
    assert not local.accepts_client("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"})
    assert not local.accepts_client("127.0.0.1", {"Forwarded": "for=203.0.113.9"})


def test_proxy_mode_believes_only_its_trusted_proxies() -> None:
    config = AuthConfig(mode="proxy", trusted_proxies=("127.0.0.1", "10.0.0.0/24"))
    assert config.accepts_client("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"})
    assert config.accepts_client("10.0.0.77", {})
    assert not config.accepts_client("10.0.1.1", {})
    assert not config.accepts_client("192.0.2.2", {"X-Forwarded-Email": "a@b.org"})


def test_signed_in_modes_serve_anyone_who_then_signs_in() -> None:
    assert AuthConfig(mode="oidc").accepts_client("192.0.2.2", {})
    assert AuthConfig(mode="local").accepts_client("198.51.100.4", {})


def test_idle_sign_out() -> None:
    config = AuthConfig(mode="local", idle_minutes=10)
    assert not config.idle_expired(1000.0, 1000.0 + 600)
    assert config.idle_expired(1000.0, 1000.0 + 601)
