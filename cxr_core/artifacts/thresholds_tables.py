"""Threshold sets in a database, for dashboard servers that share them (PostgreSQL).

The same facts :class:`~cxr_core.artifacts.thresholds_store.ThresholdStore` keeps as files next
to a checkpoint, as rows keyed by the checkpoint's folder name (the same model is found under
that name on every server): each saved set (its JSON, as the file holds it), every version a
save replaced (``threshold_set_history``), the model's default set, the append-only log of
who made which set the default, and each reader's own choice (``threshold_readers``: the set they
read with and how much of that log they have acknowledged). The tables are written once in the SQL both engines share
(:mod:`cxr_core.artifacts.database`); their schema version is the ``thresholds`` row.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from cxr_core.artifacts.database import Connection, Database
from cxr_core.errors import ThresholdSetError

SCHEMA_VERSION = 2
_TABLES = """
CREATE TABLE IF NOT EXISTS threshold_sets (
    checkpoint TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (checkpoint, name)
);
CREATE TABLE IF NOT EXISTS threshold_set_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    checkpoint TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    replaced TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS threshold_active (
    checkpoint TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS threshold_activations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    checkpoint TEXT NOT NULL,
    time TEXT NOT NULL,
    by_reader TEXT NOT NULL,
    from_set TEXT NOT NULL,
    to_set TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS threshold_readers (
    checkpoint TEXT NOT NULL,
    reader TEXT NOT NULL,
    set_name TEXT NOT NULL,
    seen INTEGER NOT NULL,
    updated TEXT NOT NULL,
    PRIMARY KEY (checkpoint, reader)
);
CREATE INDEX IF NOT EXISTS threshold_set_history_key ON threshold_set_history (checkpoint, name)
"""
_READER_FIELDS = ("set", "seen")
"""What a reader's stored choice holds: the set they read with, how much of the log they have seen."""


class ThresholdTables:
    """One checkpoint's threshold sets in ``target`` (a PostgreSQL URL or a SQLite file)."""

    def __init__(self, target: str, checkpoint: str, timeout_s: float = 30.0) -> None:
        self.checkpoint = checkpoint
        self.db = Database(
            target, ThresholdSetError, name="threshold database", timeout_s=timeout_s
        )
        self.where = self.db.where
        # every table is CREATE ... IF NOT EXISTS: an older schema gains the tables it lacks
        self.db.migrate("thresholds", SCHEMA_VERSION, lambda conn, _: conn.executescript(_TABLES))

    def names(self) -> list[str]:
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT name FROM threshold_sets WHERE checkpoint = ? ORDER BY name",
                (self.checkpoint,),
            ).fetchall()
        return [r[0] for r in rows]

    def read(self, name: str) -> dict | None:
        """The set's JSON as saved, or None when there is no such set."""
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT data FROM threshold_sets WHERE checkpoint = ? AND name = ?",
                (self.checkpoint, name),
            ).fetchone()
        return json.loads(row[0]) if row is not None else None

    def write(self, name: str, data: dict) -> None:
        """Save a set; the version it replaces goes to the history in the same transaction."""
        with self.db.connect() as conn:
            conn.lock_writes()
            conn.execute(
                "INSERT INTO threshold_set_history (checkpoint, name, data, replaced) "
                "SELECT checkpoint, name, data, ? FROM threshold_sets WHERE checkpoint = ? AND name = ?",
                (_now(), self.checkpoint, name),
            )
            conn.execute(
                "INSERT INTO threshold_sets (checkpoint, name, data) VALUES (?, ?, ?) "
                "ON CONFLICT (checkpoint, name) DO UPDATE SET data = excluded.data",
                (self.checkpoint, name, json.dumps(data)),
            )

    def versions(self, name: str) -> list[dict]:
        """Every version of a set that a save replaced, oldest first."""
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT data FROM threshold_set_history WHERE checkpoint = ? AND name = ? ORDER BY id",
                (self.checkpoint, name),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def active(self) -> str | None:
        with self.db.connect() as conn:
            row = conn.execute(
                "SELECT name FROM threshold_active WHERE checkpoint = ?", (self.checkpoint,)
            ).fetchone()
        return row[0] if row is not None else None

    def activate(self, name: str, by: str, fallback: str) -> dict:
        """Make ``name`` the default and log it, in one transaction; ``fallback`` is the set in
        force when none was chosen or the chosen one is gone. Returns the log entry."""
        with self.db.connect() as conn:
            conn.lock_writes()
            row = conn.execute(
                "SELECT a.name FROM threshold_active a JOIN threshold_sets s "
                "ON s.checkpoint = a.checkpoint AND s.name = a.name WHERE a.checkpoint = ?",
                (self.checkpoint,),
            ).fetchone()
            entry = {"when": _now(), "by": by, "from": row[0] if row else fallback, "to": name}
            conn.execute(
                "INSERT INTO threshold_active (checkpoint, name) VALUES (?, ?) "
                "ON CONFLICT (checkpoint) DO UPDATE SET name = excluded.name",
                (self.checkpoint, name),
            )
            conn.execute(
                "INSERT INTO threshold_activations (checkpoint, time, by_reader, from_set, to_set) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.checkpoint, entry["when"], by, entry["from"], name),
            )
        return entry

    def activations(self) -> list[dict]:
        with self.db.connect() as conn:
            rows = conn.execute(
                "SELECT time, by_reader, from_set, to_set FROM threshold_activations "
                "WHERE checkpoint = ? ORDER BY id",
                (self.checkpoint,),
            ).fetchall()
        return [{"when": r[0], "by": r[1], "from": r[2], "to": r[3]} for r in rows]

    def reader(self, reader: str) -> dict | None:
        """``{"set", "seen"}`` stored for ``reader`` (a key already cleaned), or None."""
        with self.db.connect() as conn:
            row = self._reader_row(conn, reader)
        return {"set": row[0], "seen": int(row[1])} if row is not None else None

    def _reader_row(self, conn: Connection, reader: str) -> Any:
        """``reader``'s (set_name, seen) row, readable by position on both engines, or None."""
        return conn.execute(
            "SELECT set_name, seen FROM threshold_readers WHERE checkpoint = ? AND reader = ?",
            (self.checkpoint, reader),
        ).fetchone()

    def update_reader(self, reader: str, changes: dict) -> dict:
        """Change ``reader``'s stored choice in one transaction (a reader seen for the first time
        starts with every default change so far acknowledged); returns ``{"set", "seen"}``."""
        unknown = set(changes) - set(_READER_FIELDS)
        if unknown:
            raise ThresholdSetError(f"unknown reader-choice field(s): {', '.join(sorted(unknown))}")
        with self.db.connect() as conn:
            conn.lock_writes()
            row = self._reader_row(conn, reader)
            if row is None:
                logged = conn.execute(
                    "SELECT COUNT(*) FROM threshold_activations WHERE checkpoint = ?",
                    (self.checkpoint,),
                ).fetchone()[0]
                row = ("", int(logged))
            item = {"set": str(row[0]), "seen": int(row[1]), **changes}
            conn.execute(
                "INSERT INTO threshold_readers (checkpoint, reader, set_name, seen, updated) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (checkpoint, reader) DO UPDATE SET "
                "set_name = excluded.set_name, seen = excluded.seen, updated = excluded.updated",
                (self.checkpoint, reader, item["set"], int(item["seen"]), _now()),
            )
        return item


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
