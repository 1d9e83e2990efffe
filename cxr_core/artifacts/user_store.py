"""The users of an install and their roles: a table of the review database.

Every user has a name (the reader name their work is saved under: a login name for local
accounts, the e-mail an OpenID Connect provider or a reverse proxy vouches for) and a role
(:data:`cxr_core.access.roles.ROLES`). Local accounts also have an Argon2id password hash; users
who sign in elsewhere have none. Names are unique regardless of case. Adding, removing and
changing users needs the ``admin`` role (the command line's operator has it) and is audited; the
last admin cannot be removed or demoted, so nobody is locked out of managing users.

Signing in with a password (:meth:`UserStore.sign_in`) is audited whether it succeeds or not;
after ``max_failed`` failed attempts on one name within ``lockout_minutes`` that name is locked
for the rest of the window, whether or not the account exists (so a refusal does not reveal
which names do).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cxr_core.access import passwords, roles
from cxr_core.access.roles import Actor, check_role
from cxr_core.artifacts import audit_log
from cxr_core.artifacts.audit_log import AuditLog, Connect, write_entry
from cxr_core.artifacts.database import Connection
from cxr_core.errors import AccessDeniedError, SignInError

MAX_NAME = 64  # a user's name is also their reader name, which the review store caps at 64

TABLE = f"""
CREATE TABLE IF NOT EXISTS users (
    name_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ({", ".join(repr(r) for r in roles.ROLES)})),
    password_hash TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
)
"""
"""The table, declared like the review database's other tables."""


@dataclass(frozen=True)
class User:
    """One user as listed (never with the password hash)."""

    name: str
    role: str
    has_password: bool
    created: str
    updated: str


def clean_user_name(name: object) -> str:
    """A user name as stored: normalised (NFKC), whitespace collapsed, 1-64 printable characters."""
    clean = " ".join(unicodedata.normalize("NFKC", str(name or "")).split())
    if not clean:
        raise AccessDeniedError("a user needs a name (a login name or an e-mail address)")
    if len(clean) > MAX_NAME:
        raise AccessDeniedError(f"user name '{clean[:20]}…' is longer than {MAX_NAME} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in clean):
        raise AccessDeniedError("a user name cannot hold control characters")
    return clean


def _user(row: Mapping[str, Any]) -> User:
    return User(
        row["name"], row["role"], bool(row["password_hash"]), row["created"], row["updated"]
    )


class UserStore:
    """Users of one review database; every change is checked against the acting user's role and audited."""

    def __init__(self, connect: Connect, audit: AuditLog) -> None:
        self._connect = connect
        self.audit = audit

    def get(self, name: str) -> User | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM users WHERE name_key = ?", (clean_user_name(name).casefold(),)
            ).fetchone()
        return _user(row) if row is not None else None

    def list(self) -> list[User]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM users ORDER BY name_key").fetchall()
        return [_user(r) for r in rows]

    def add(self, actor: Actor, name: str, role: str, password: str | None = None) -> User:
        """Add a user; ``password`` only for a local account (others sign in through SSO or a proxy)."""
        actor.require(roles.MANAGE_USERS)
        name, role = clean_user_name(name), check_role(role)
        digest = passwords.hash_password(password) if password is not None else None
        stamp = audit_log.now()
        with self._connect() as conn:
            conn.lock_writes()
            if conn.execute(
                "SELECT 1 FROM users WHERE name_key = ?", (name.casefold(),)
            ).fetchone():
                raise AccessDeniedError(
                    f"there is already a user named {name}; change their role or password instead"
                )
            conn.execute(
                "INSERT INTO users (name_key, name, role, password_hash, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name.casefold(), name, role, digest, stamp, stamp),
            )
            write_entry(
                conn,
                actor,
                audit_log.USER_ADDED,
                target=name,
                detail={"role": role, "local_account": digest is not None},
            )
        return User(name, role, digest is not None, stamp, stamp)

    def _existing(self, conn: Connection, name: str) -> Mapping[str, Any]:
        row = conn.execute("SELECT * FROM users WHERE name_key = ?", (name.casefold(),)).fetchone()
        if row is None:
            raise AccessDeniedError(f"there is no user named {name}")
        return row

    @staticmethod
    def _refuse_last_admin(conn: Connection, row: Mapping[str, Any], what: str) -> None:
        if row["role"] != "admin":
            return
        admins = conn.execute("SELECT COUNT(*) FROM users WHERE role = 'admin'").fetchone()[0]
        if admins <= 1:
            raise AccessDeniedError(
                f"{row['name']} is the only admin; {what} would leave nobody to manage users. "
                "Make another user admin first"
            )

    def remove(self, actor: Actor, name: str) -> None:
        """Remove a user (their calls and history stay, under their name)."""
        actor.require(roles.MANAGE_USERS)
        name = clean_user_name(name)
        with self._connect() as conn:
            conn.lock_writes()
            row = self._existing(conn, name)
            self._refuse_last_admin(conn, row, "removing them")
            conn.execute("DELETE FROM users WHERE name_key = ?", (name.casefold(),))
            write_entry(
                conn,
                actor,
                audit_log.USER_REMOVED,
                target=row["name"],
                detail={"role": row["role"]},
            )

    def set_role(self, actor: Actor, name: str, role: str) -> User:
        actor.require(roles.MANAGE_USERS)
        name, role = clean_user_name(name), check_role(role)
        with self._connect() as conn:
            conn.lock_writes()
            row = self._existing(conn, name)
            if role != "admin":
                self._refuse_last_admin(conn, row, f"making them {role}")
            stamp = audit_log.now()
            conn.execute(
                "UPDATE users SET role = ?, updated = ? WHERE name_key = ?",
                (role, stamp, name.casefold()),
            )
            write_entry(
                conn,
                actor,
                audit_log.USER_ROLE,
                target=row["name"],
                detail={"from": row["role"], "to": role},
            )
        return User(row["name"], role, bool(row["password_hash"]), row["created"], stamp)

    def set_password(self, actor: Actor, name: str, password: str) -> None:
        """Set a local account's password: an admin for anyone, a signed-in user for themselves."""
        name = clean_user_name(name)
        if not (actor.identified and actor.name.casefold() == name.casefold()):
            actor.require(roles.MANAGE_USERS)
        digest = passwords.hash_password(password)
        with self._connect() as conn:
            conn.lock_writes()
            row = self._existing(conn, name)
            conn.execute(
                "UPDATE users SET password_hash = ?, updated = ? WHERE name_key = ?",
                (digest, audit_log.now(), name.casefold()),
            )
            write_entry(conn, actor, audit_log.USER_PASSWORD, target=row["name"])

    def sign_in(
        self,
        name: str,
        password: str,
        *,
        client: str = "",
        max_failed: int = 5,
        lockout_minutes: float = 15.0,
    ) -> Actor:
        """The local account ``name`` signed in with ``password``, or :class:`SignInError` (audited either way)."""
        try:
            name = clean_user_name(name)
        except AccessDeniedError as exc:
            raise SignInError(str(exc)) from None
        key = name.casefold()
        failed, last = self.audit.failed_sign_ins(key, lockout_minutes)
        if failed >= max_failed:
            until = datetime.fromisoformat(last) + timedelta(minutes=lockout_minutes)
            self.audit.record(
                None,
                audit_log.SIGN_IN_REFUSED,
                user=name,
                client=client,
                target=key,
                detail={"why": "locked after failed sign-ins"},
            )
            raise SignInError(
                f"too many failed sign-ins for {name}: try again after {until:%H:%M} UTC, "
                "or ask an admin to check the account"
            )
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM users WHERE name_key = ?", (key,)).fetchone()
        stored = row["password_hash"] if row is not None else None
        if not passwords.verify_password(stored, password):
            self.audit.record(
                None,
                audit_log.SIGN_IN_FAILED,
                user=name,
                client=client,
                target=key,
                detail={"via": "password"},
            )
            raise SignInError("wrong name or password")
        actor = Actor(row["name"], row["role"], "password", client)
        with self._connect() as conn:
            if passwords.needs_rehash(stored):
                conn.execute(
                    "UPDATE users SET password_hash = ? WHERE name_key = ?",
                    (passwords.hash_password(password), key),
                )
            write_entry(conn, actor, audit_log.SIGN_IN, target=key)
        return actor

    def actor_for(self, name: str, via: str, *, default_role: str = "", client: str = "") -> Actor:
        """The actor of a user an OpenID Connect provider or a trusted proxy vouches for: their role
        from the users table, else ``default_role``; a user with neither is refused (and audited)."""
        name = clean_user_name(name)
        user = self.get(name)
        role = user.role if user is not None else default_role
        if not role:
            self.audit.record(
                None,
                audit_log.SIGN_IN_REFUSED,
                user=name,
                client=client,
                target=name.casefold(),
                detail={"why": "no role", "via": via},
            )
            raise SignInError(
                f"{name} signed in, but has no role on this server; ask an admin to add you "
                f"(cxr users add {name} --role reader --no-password)"
            )
        return Actor(user.name if user is not None else name, role, via, client)

    def named(self, name: str) -> Actor:
        """The command line run as a listed user (``--as NAME``): their name and role, nothing more."""
        user = self.get(name)
        if user is None:
            raise AccessDeniedError(
                f"there is no user named {clean_user_name(name)} (cxr users list shows them)"
            )
        return Actor(user.name, user.role, roles.VIA_CLI_AS)
