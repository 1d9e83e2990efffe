"""The audit log: who did what, when, from where — a table of the review database, only ever appended to.

One row per event: sign-in (and failed or refused sign-ins), sign-out, a film viewed, a call
saved, a reveal, an adjudication, an export, a review session started or changed, a threshold
set saved or made the default, a user added, removed or changed, the audit log exported. Each
row has the time (UTC), the user, their role, how they came in (``oidc``, ``password``,
``proxy``, ``local``, ``cli``), the client's address, the action, the film it concerned (kept
apart, as it identifies a patient: exports pseudonymise it), the other object it concerned (a
session, a threshold set, a user) and details as JSON.

The stores write their events in the same transaction as the change itself, so a change is
never saved without its entry. Nothing in the library updates or deletes a row, and the database
refuses to, SQLite and PostgreSQL alike (:meth:`cxr_core.artifacts.database.Connection.append_only`).
Passwords, password hashes, keys and client secrets are never written here: details are built by
the stores from known fields only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from cxr_core.access import roles
from cxr_core.access.pseudonym import Pseudonymiser
from cxr_core.access.roles import Actor
from cxr_core.artifacts.database import Connection
from cxr_core.errors import ReviewStoreError
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.csv_safe import records_csv_text

SIGN_IN = "sign_in"
SIGN_IN_FAILED = "sign_in_failed"
SIGN_IN_REFUSED = "sign_in_refused"
SIGN_OUT = "sign_out"
FILM_VIEWED = "film_viewed"
CALL_SAVED = "call_saved"
REVEAL = "reveal"
ADJUDICATE = "adjudicate"
EXPORT = "export"
SESSION_CREATED = "session_created"
SESSION_CHANGED = "session_changed"
THRESHOLDS_SAVED = "thresholds_saved"
THRESHOLDS_DEFAULT = "thresholds_default"
USER_ADDED = "user_added"
USER_REMOVED = "user_removed"
USER_ROLE = "user_role"
USER_PASSWORD = "user_password"
AUDIT_EXPORTED = "audit_exported"
ACTIONS: tuple[str, ...] = (
    SIGN_IN,
    SIGN_IN_FAILED,
    SIGN_IN_REFUSED,
    SIGN_OUT,
    FILM_VIEWED,
    CALL_SAVED,
    REVEAL,
    ADJUDICATE,
    EXPORT,
    SESSION_CREATED,
    SESSION_CHANGED,
    THRESHOLDS_SAVED,
    THRESHOLDS_DEFAULT,
    USER_ADDED,
    USER_REMOVED,
    USER_ROLE,
    USER_PASSWORD,
    AUDIT_EXPORTED,
)
COLUMNS: tuple[str, ...] = (
    "id",
    "time",
    "actor",
    "role",
    "via",
    "client",
    "action",
    "film",
    "target",
    "detail",
)

TABLE = """
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT '',
    via TEXT NOT NULL DEFAULT '',
    client TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL,
    film TEXT NOT NULL DEFAULT '',
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
CREATE INDEX IF NOT EXISTS audit_log_actor_action ON audit_log (actor, action, time)
"""
"""The table, declared like the review database's other tables (statements separated by ';')."""

Connect = Callable[[], AbstractContextManager[Connection]]


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: str
    actor: str
    role: str
    via: str
    client: str
    action: str
    film: str = ""
    target: str = ""
    detail: dict = field(default_factory=dict)


def write_entry(
    conn: Connection,
    actor: Actor | None,
    action: str,
    *,
    film: str = "",
    target: str = "",
    detail: Mapping[str, object] | None = None,
    user: str | None = None,
    client: str | None = None,
) -> None:
    """Append one event through ``conn`` (inside the caller's transaction).

    ``user`` and ``client`` say who it concerns and from where when there is no actor (a failed
    sign-in: the name tried).
    """
    if action not in ACTIONS:
        raise ReviewStoreError(f"'{action}' is not an audit action")
    conn.execute(
        "INSERT INTO audit_log (time, actor, role, via, client, action, film, target, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now(),
            user if user is not None else (actor.name if actor else ""),
            actor.role if actor else "",
            actor.via if actor else "",
            client if client is not None else (actor.client if actor else ""),
            action,
            str(film),
            str(target),
            json.dumps(dict(detail or {}), sort_keys=True, default=str),
        ),
    )


def _entry(row: Mapping[str, Any]) -> AuditEntry:
    try:
        detail = json.loads(row["detail"] or "{}")
    except ValueError:
        detail = {"unreadable": row["detail"]}
    return AuditEntry(
        int(row["id"]),
        row["time"],
        row["actor"],
        row["role"],
        row["via"],
        row["client"],
        row["action"],
        row["film"],
        row["target"],
        detail if isinstance(detail, dict) else {"value": detail},
    )


class AuditLog:
    """Append and read the audit log of one review database (``connect`` opens a transaction)."""

    def __init__(self, connect: Connect) -> None:
        self._connect = connect

    def record(
        self,
        actor: Actor | None,
        action: str,
        *,
        film: str = "",
        target: str = "",
        detail: Mapping[str, object] | None = None,
        user: str | None = None,
        client: str | None = None,
    ) -> None:
        """Append one event in a transaction of its own (a film viewed, a sign-in, a sign-out)."""
        with self._connect() as conn:
            write_entry(
                conn,
                actor,
                action,
                film=film,
                target=target,
                detail=detail,
                user=user,
                client=client,
            )

    def entries(
        self,
        *,
        since: str | None = None,
        user: str | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Events, newest first, optionally since a time (ISO 8601, UTC), of one user or one action."""
        clauses, args = [], []
        for column, op, value in (
            ("time", ">=", since),
            ("actor", "=", user),
            ("action", "=", action),
        ):
            if value:
                clauses.append(f"{column} {op} ?")
                args.append(str(value))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        tail = f" LIMIT {int(limit)}" if limit else ""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM audit_log{where} ORDER BY id DESC{tail}", args
            ).fetchall()
        return [_entry(r) for r in rows]

    def read(
        self,
        actor: Actor,
        *,
        since: str | None = None,
        user: str | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """:meth:`entries` for someone allowed to read the audit log (admins), else refused."""
        actor.require(roles.READ_AUDIT)
        return self.entries(since=since, user=user, action=action, limit=limit)

    def failed_sign_ins(self, name_key: str, minutes: float) -> tuple[int, str]:
        """(failed password sign-ins on a name in the last ``minutes`` since its last good one, time
        of the latest failure), for locking an account that is being guessed at. Sign-in events
        carry the name tried, case-folded, as their target."""
        since = (datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat(
            timespec="milliseconds"
        )
        with self._connect() as conn:
            last_good = conn.execute(
                "SELECT MAX(time) FROM audit_log WHERE action = ? AND target = ? AND via = 'password'",
                (SIGN_IN, name_key),
            ).fetchone()[0]
            row = conn.execute(
                "SELECT COUNT(*), MAX(time) FROM audit_log WHERE action = ? AND target = ? AND time >= ?",
                (SIGN_IN_FAILED, name_key, max(since, last_good or "")),
            ).fetchone()
        return int(row[0]), row[1] or ""

    def export_text(
        self,
        actor: Actor,
        *,
        pseudonymiser: Pseudonymiser | None,
        since: str | None = None,
        fmt: str = "csv",
        where: str = "a download",
    ) -> tuple[str, int]:
        """(the log oldest first as CSV or JSON lines, its number of events), for an admin; films
        pseudonymised unless ``pseudonymiser`` is None (which needs the right to see patient
        identifiers). The export itself is audited, with ``where`` it went."""
        if pseudonymiser is None:
            actor.require(roles.VIEW_PATIENT_DATA)
        if fmt not in ("csv", "jsonl"):
            raise ReviewStoreError(f"audit export format '{fmt}' is not one of: csv, jsonl")
        records = [asdict(e) for e in reversed(self.read(actor, since=since))]
        if pseudonymiser is not None:
            records = pseudonymiser.records(records, ("film",))
        if fmt == "csv":
            flat = [{**r, "detail": json.dumps(r["detail"], sort_keys=True)} for r in records]
            text = records_csv_text(flat, COLUMNS)
        else:
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
        self.record(
            actor,
            AUDIT_EXPORTED,
            target=where,
            detail={
                "rows": len(records),
                "format": fmt,
                "pseudonymised": pseudonymiser is not None,
            },
        )
        return text, len(records)

    def export(
        self,
        actor: Actor,
        path: str | os.PathLike[str],
        *,
        pseudonymiser: Pseudonymiser | None,
        since: str | None = None,
        fmt: str = "csv",
    ) -> int:
        """Write :meth:`export_text` to ``path`` (atomically); returns the number of events."""
        text, n = self.export_text(
            actor, pseudonymiser=pseudonymiser, since=since, fmt=fmt, where=str(path)
        )
        write_text_atomically(path, text)
        return n
