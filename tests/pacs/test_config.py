"""Where the PACS settings come from, and that the password stays out of every text."""

from __future__ import annotations

import logging

import pytest

from cxr_core.errors import ConfigError
from cxr_core.pacs.client import PacsClient
from cxr_core.pacs.config import load_pacs_config, redacted_url

SECRET = "pa55-w0rd"


def test_command_line_beats_file_beats_environment(tmp_path):
    config = tmp_path / "pacs.json"
    config.write_text(
        '{"url": "https://file.example/dicom-web", "username": "filer", "timeout_s": "12"}'
    )
    config.chmod(0o600)
    env = {
        "CXR_PACS_URL": "https://env.example/dw",
        "CXR_PACS_USER": "env",
        "CXR_PACS_PASSWORD": SECRET,
    }
    from_env = load_pacs_config(environ=env)
    assert (from_env.url, from_env.username, from_env.password) == (
        "https://env.example/dw",
        "env",
        SECRET,
    )
    from_file = load_pacs_config(config_file=config, environ=env)
    assert (from_file.url, from_file.username, from_file.timeout_s) == (
        "https://file.example/dicom-web",
        "filer",
        12.0,
    )
    given = load_pacs_config(
        url="http://cli.example:8042/dicom-web", config_file=config, environ=env
    )
    assert given.url == "http://cli.example:8042/dicom-web" and given.password == SECRET
    assert SECRET not in repr(given)


def test_password_file_and_refusals(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    config = load_pacs_config(
        url="http://h/dw", username="u", overrides={"password_file": str(secret)}, environ={}
    )
    assert config.password == SECRET
    with pytest.raises(ConfigError, match="credentials inside it") as caught:
        load_pacs_config(url=f"http://u:{SECRET}@h/dw", environ={})
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="no PACS given"):
        load_pacs_config(environ={})
    with pytest.raises(ConfigError, match="not an http"):
        load_pacs_config(url="ftp://h/dw", environ={})
    with pytest.raises(ConfigError, match="unknown PACS setting"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("url: http://h/dw\npasword: x\n")
        load_pacs_config(config_file=bad, environ={})
    assert redacted_url(f"https://u:{SECRET}@h:8443/dw?token={SECRET}") == "https://h:8443/dw"


def test_insecure_tls_is_warned_about(caplog):
    caplog.set_level(logging.WARNING)
    PacsClient(load_pacs_config(url="https://h/dw", overrides={"verify_tls": False}, environ={}))
    assert "TLS certificate checks are OFF" in caplog.text


def test_score_needs_a_selection_of_studies(capsys):
    from cxr_core.cli.main import main

    assert main(["pacs", "score", "--url", "http://127.0.0.1:9/dw", "--checkpoint", "x"]) == 2
    assert "say which studies to score" in capsys.readouterr().err
