"""Reviewer verdicts on model predictions, kept in one SQLite file.

Radiologists page through an evaluation run's cases (false positives, false negatives, ...)
and record whether they agree with the model, think the model or the label is wrong, or are
unsure. Several reviewers (browser sessions, threads of one server, separate processes) may
write at once, so the database runs in WAL mode with a busy timeout and every call opens its
own short-lived connection: ``sqlite3`` connections must not be shared across threads.

The file lives in ``$CXR_REVIEW_DIR/review.sqlite3`` (default ``~/.cxr/review.sqlite3``).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cxr_core.errors import ReviewStoreError

VERDICTS: tuple[str, ...] = ("agree", "model_wrong", "label_wrong", "unsure")
DB_NAME = "review.sqlite3"
EXPORT_COLUMNS: tuple[str, ...] = (
    "session_id", "session_name", "checkpoint", "eval_run", "image_id", "class_name",
    "verdict", "note", "reviewer", "updated",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    eval_run TEXT NOT NULL,
    filters TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS verdicts (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL,
    class_name TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('agree', 'model_wrong', 'label_wrong', 'unsure')),
    note TEXT NOT NULL DEFAULT '',
    reviewer TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL,
    UNIQUE (session_id, image_id, class_name)
);
"""


def default_review_dir() -> Path:
    """``$CXR_REVIEW_DIR`` when set, else ``~/.cxr``."""
    env = os.environ.get("CXR_REVIEW_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cxr"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class ReviewSession:
    """A reviewer's pass over one evaluation run with a given filter; ``position`` is where they stopped."""

    id: int
    name: str
    checkpoint: str
    eval_run: str
    filters: dict = field(default_factory=dict)
    created: str = ""
    position: int = 0


@dataclass(frozen=True)
class Verdict:
    session_id: int
    image_id: str
    class_name: str
    verdict: str
    note: str
    reviewer: str
    updated: str


class ReviewStore:
    """Sessions and verdicts in one SQLite database file (created on first use)."""

    def __init__(self, folder: str | os.PathLike | None = None, *, timeout_s: float = 30.0) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else default_review_dir()
        self.path = self.folder / DB_NAME
        self.timeout_s = timeout_s
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ReviewStoreError(
                f"cannot open the review database {self.path} ({exc}); set CXR_REVIEW_DIR to a writable folder"
            ) from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection per call: commits on success, rolls back on error, always closes."""
        conn = sqlite3.connect(self.path, timeout=self.timeout_s)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            with conn:
                yield conn
        finally:
            conn.close()

    # -- sessions ---------------------------------------------------------------------------
    def create_session(self, name: str, checkpoint: str, eval_run: str,
                       filters: Mapping | None = None) -> ReviewSession:
        if not str(name).strip():
            raise ReviewStoreError("a review session needs a name (e.g. your initials and the date)")
        created = _now()
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT INTO sessions (name, checkpoint, eval_run, filters, created) VALUES (?, ?, ?, ?, ?)",
                (str(name).strip(), str(checkpoint), str(eval_run), json.dumps(dict(filters or {}), sort_keys=True), created),
            )
            session_id = int(cur.lastrowid)
        return self.session(session_id)

    def session(self, session_id: int) -> ReviewSession:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (int(session_id),)).fetchone()
        if row is None:
            raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}")
        return _session(row)

    def sessions(self, checkpoint: str | None = None) -> list[ReviewSession]:
        """Sessions, newest first; only those of ``checkpoint`` when given."""
        query, args = "SELECT * FROM sessions", ()
        if checkpoint is not None:
            query, args = query + " WHERE checkpoint = ?", (str(checkpoint),)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY id DESC", args).fetchall()
        return [_session(r) for r in rows]

    def save_position(self, session_id: int, position: int) -> None:
        """Remember the case index a reviewer is on, so the session resumes there."""
        if int(position) < 0:
            raise ReviewStoreError(f"review position must be 0 or more, not {position}")
        with self._connect() as conn:
            cur = conn.execute("UPDATE sessions SET position = ? WHERE id = ?", (int(position), int(session_id)))
        if cur.rowcount == 0:
            raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}")

    def update_filters(self, session_id: int, filters: Mapping, position: int = 0) -> None:
        """New filters change which cases a session walks through, so its position restarts."""
        if int(position) < 0:
            raise ReviewStoreError(f"review position must be 0 or more, not {position}")
        with self._connect() as conn:
            cur = conn.execute("UPDATE sessions SET filters = ?, position = ? WHERE id = ?",
                               (json.dumps(dict(filters), sort_keys=True), int(position), int(session_id)))
        if cur.rowcount == 0:
            raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}")

    # -- verdicts ---------------------------------------------------------------------------
    def record(self, session_id: int, image_id: str, class_name: str, verdict: str,
               note: str = "", reviewer: str = "") -> Verdict:
        """Insert or replace the verdict for one (session, image, class)."""
        if verdict not in VERDICTS:
            raise ReviewStoreError(f"verdict '{verdict}' is not one of: {', '.join(VERDICTS)}")
        if not str(image_id) or not str(class_name):
            raise ReviewStoreError("a verdict needs both an image id and a class name")
        updated = _now()
        try:
            with self._connect() as conn:
                conn.execute(
                    """INSERT INTO verdicts (session_id, image_id, class_name, verdict, note, reviewer, updated)
                       VALUES (?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (session_id, image_id, class_name) DO UPDATE SET
                         verdict = excluded.verdict, note = excluded.note,
                         reviewer = excluded.reviewer, updated = excluded.updated""",
                    (int(session_id), str(image_id), str(class_name), verdict, str(note), str(reviewer), updated),
                )
        except sqlite3.IntegrityError:
            raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}") from None
        return Verdict(int(session_id), str(image_id), str(class_name), verdict, str(note), str(reviewer), updated)

    def verdict(self, session_id: int, image_id: str, class_name: str) -> Verdict | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM verdicts WHERE session_id = ? AND image_id = ? AND class_name = ?",
                (int(session_id), str(image_id), str(class_name)),
            ).fetchone()
        return _verdict(row) if row is not None else None

    def verdicts(self, session_id: int | None = None) -> list[Verdict]:
        query, args = "SELECT * FROM verdicts", ()
        if session_id is not None:
            query, args = query + " WHERE session_id = ?", (int(session_id),)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY session_id, image_id, class_name", args).fetchall()
        return [_verdict(r) for r in rows]

    def export_rows(self, session_id: int | None = None) -> list[dict]:
        """Verdicts joined with their session, in :data:`EXPORT_COLUMNS` order."""
        query = """SELECT v.session_id, s.name AS session_name, s.checkpoint, s.eval_run, v.image_id,
                          v.class_name, v.verdict, v.note, v.reviewer, v.updated
                   FROM verdicts v JOIN sessions s ON s.id = v.session_id"""
        args: tuple = ()
        if session_id is not None:
            query, args = query + " WHERE v.session_id = ?", (int(session_id),)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY v.session_id, v.image_id, v.class_name", args).fetchall()
        return [{k: r[k] for k in EXPORT_COLUMNS} for r in rows]

    def export_csv(self, path: str | os.PathLike, session_id: int | None = None) -> int:
        """Write verdicts to a CSV file; returns the number of rows written."""
        rows = self.export_rows(session_id)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(EXPORT_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        return len(rows)


def _session(row: sqlite3.Row) -> ReviewSession:
    return ReviewSession(int(row["id"]), row["name"], row["checkpoint"], row["eval_run"],
                         json.loads(row["filters"] or "{}"), row["created"], int(row["position"]))


def _verdict(row: sqlite3.Row) -> Verdict:
    return Verdict(int(row["session_id"]), row["image_id"], row["class_name"], row["verdict"],
                   row["note"], row["reviewer"], row["updated"])
