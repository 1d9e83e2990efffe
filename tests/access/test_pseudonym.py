"""Pseudonyms: HMAC-SHA256 with a per-install key, created once with permissions 0600."""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
import threading

import pytest

from cxr_core.access.pseudonym import Pseudonymiser, key_path
from cxr_core.errors import ConfigError


def test_pseudonyms_are_the_keyed_hash_stable_and_install_specific(tmp_path) -> None:
    first = Pseudonymiser.for_install(tmp_path / "a" / "pseudonym.key")
    again = Pseudonymiser.for_install(tmp_path / "a" / "pseudonym.key")
    other = Pseudonymiser.for_install(tmp_path / "b" / "pseudonym.key")
    key = bytes.fromhex((tmp_path / "a" / "pseudonym.key").read_text().strip())
    expected = hmac.new(key, b"00000001_000.png", hashlib.sha256).hexdigest()[:20]
    assert first.pseudonym("00000001_000.png") == "anon-" + expected
    assert again.pseudonym("00000001_000.png") == first.pseudonym("00000001_000.png")
    assert other.pseudonym("00000001_000.png") != first.pseudonym("00000001_000.png")
    assert first.pseudonym("") == "" and first.pseudonym(None) == ""
    plain = hashlib.sha256(b"00000001_000.png").hexdigest()[:20]
    assert plain not in first.pseudonym("00000001_000.png")  # not recomputable without the key


def test_the_key_file_is_private_and_never_shown(tmp_path, caplog) -> None:
    path = tmp_path / "state" / "pseudonym.key"
    with caplog.at_level(logging.DEBUG, logger="cxr_core"):
        made = Pseudonymiser.for_install(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) == 64
    assert secret not in repr(made) and secret not in caplog.text
    assert "created the pseudonym key" in caplog.text


def test_concurrent_first_uses_agree_on_one_key(tmp_path) -> None:
    path = tmp_path / "pseudonym.key"
    made: list[str] = []
    threads = [
        threading.Thread(target=lambda: made.append(Pseudonymiser.for_install(path).pseudonym("x")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["pseudonym.key"]


def test_records_replace_only_identifying_columns(tmp_path) -> None:
    pseudo = Pseudonymiser.for_install(tmp_path / "k")
    rows = pseudo.records([{"image_id": "a.png", "patient_id": "P1", "prob:Mass": 0.3}])
    assert rows == [
        {
            "image_id": pseudo.pseudonym("a.png"),
            "patient_id": pseudo.pseudonym("P1"),
            "prob:Mass": 0.3,
        }
    ]


def test_a_damaged_or_readable_key_is_reported(tmp_path, caplog) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("not hex\n")
    with pytest.raises(ConfigError, match="not 64 hexadecimal digits; restore it"):
        Pseudonymiser.for_install(bad)
    shared = tmp_path / "shared.key"
    shared.write_text("ab" * 32)
    shared.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="cxr_core"):
        Pseudonymiser.for_install(shared)
    assert "chmod 600" in caplog.text


def test_the_key_lives_in_the_state_folder_unless_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CXR_PSEUDONYM_KEY", raising=False)
    assert key_path() == tmp_path / "state" / "pseudonym.key"
    monkeypatch.setenv("CXR_PSEUDONYM_KEY", str(tmp_path / "elsewhere.key"))
    assert key_path() == tmp_path / "elsewhere.key"
