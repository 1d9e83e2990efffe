"""Passwords of local accounts: hashed with Argon2id (argon2-cffi, RFC 9106 parameters), never stored
or logged in the clear.

A hash records its own parameters, so :func:`needs_rehash` tells when a stored hash was made with
weaker settings than today's and should be replaced at the next successful sign-in. Checking a
name that has no account still runs one verification (against a fixed dummy hash), so the time
a refusal takes does not tell which names exist.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cxr_core.errors import SignInError

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte "password" would only burn CPU

_HASHER = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """A hash no password matches, made once (a hash takes about a second: not at import)."""
    return _HASHER.hash("no account has this password: it only makes refusals take as long")


def check_new_password(password: str) -> str:
    """``password`` if it is long enough to be worth hashing, else a :class:`SignInError` saying so."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        raise SignInError(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise SignInError(f"a password may have at most {MAX_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    """An Argon2id hash of a new password (salted; the text holds the parameters)."""
    return _HASHER.hash(check_new_password(password))


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; a missing hash (no account, or an account
    that signs in elsewhere) is checked against a dummy so the answer takes the same time."""
    if not isinstance(password, str) or len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _dummy_hash(), password) and bool(stored_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` was made with other parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True
