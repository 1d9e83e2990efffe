"""Password hashes: Argon2id, salted, verified, refused when short; never the password itself."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from cxr_core.access import passwords
from cxr_core.errors import SignInError


def test_a_hash_verifies_its_password_only_and_is_salted() -> None:
    first = passwords.hash_password("correct horse battery")
    second = passwords.hash_password("correct horse battery")
    assert first.startswith("$argon2id$") and first != second
    assert "correct horse" not in first
    assert passwords.verify_password(first, "correct horse battery")
    assert not passwords.verify_password(first, "correct horse batterY")
    assert not passwords.needs_rehash(first)


def test_no_account_and_damaged_hashes_never_verify() -> None:
    assert not passwords.verify_password(None, "anything at all")
    assert not passwords.verify_password("not a hash", "anything at all")
    assert not passwords.verify_password("", "")


def test_weaker_parameters_ask_for_a_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse battery")
    assert passwords.verify_password(weak, "correct horse battery")
    assert passwords.needs_rehash(weak)


@pytest.mark.parametrize("bad", ["short", "", "x" * 2000])
def test_unusable_passwords_are_refused(bad: str) -> None:
    with pytest.raises(SignInError, match="password"):
        passwords.hash_password(bad)
