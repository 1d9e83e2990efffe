"""Reader verdicts on model predictions, kept in one SQLite file.

A review session is a team's pass over one evaluation run. Each named reader records, per
film and finding, their own call (finding present / absent / unsure), optionally how sure
they are (1-5), why (a reason from :data:`REASONS` plus a note) and where (a point or a box on
the image, as fractions of its width and height). In an unblinded session the call is also
stated as a verdict on the model (agree, model wrong, label wrong, unsure).

Verdicts are keyed by (session, image, class, reader): readers never overwrite each other, a
reader can only change their own verdict, and every save is also appended to
``verdict_history``. Adjudicators record the final label of disputed findings in
``adjudications`` (append-only; the latest entry counts). Each reader has their own position
in a session (``reader_positions``), remembered by image so a filter change does not lose it.

Blinded sessions: the session's agreement, adjudication, corrected metrics and export show every
film's label, model output and other readers' calls, so a reader sees them only after calling
every film, or after pressing reveal (:meth:`ReviewStore.reveal`, kept in ``reveals``: one entry
per session and reader, the first reveal counts). After a reveal the store refuses that reader's
calls on findings they had not called before revealing (they would not be blinded); changing a
call they had saved before stays allowed, as it was after they saved it and saw that film's label
and model output, and the history keeps the blinded original.

Drafts: the calls a reader makes on a film are kept in ``drafts`` (one row per session, film,
finding and reader) as they make them, so leaving the film, a reload, closing the tab or a server
restart loses nothing; saving the film (:meth:`ReviewStore.save_film`) turns them into verdicts in
the same transaction. A draft is private to its reader and never a verdict: agreement, export,
corrected labels and progress read only ``verdicts``.

Several readers (browser sessions, threads of one server, separate processes, several servers)
may write at once: every call is one short transaction, and checks that a write depends on (a
reveal) hold the database's write lock. A database that stays locked past the timeout, or
cannot be reached, is a :class:`~cxr_core.errors.ReviewStoreError`, never a driver's error.

The database is a SQLite file (the default) or a PostgreSQL server, for several dashboard servers
sharing review sessions: ``ReviewStore("postgresql://user@host/db")``, ``CXR_REVIEW_DB``, or
``--db`` of ``cxr review``. The tables and statements below are written once, in the SQL both
engines share; :mod:`cxr_core.artifacts.database` holds every difference between them.

Schema versions (the ``cxr_schema`` row of ``review``; older SQLite files: ``PRAGMA user_version``):
0 is the first, single-reader layout (one verdict per session, image and class); 2 added
readers, history, positions and adjudications; 3 added a box for "where"; 4 added ``reveals``;
5 added ``drafts``; 6 (this one) adds ``users`` and ``audit_log``
(:mod:`cxr_core.artifacts.user_store`, :mod:`cxr_core.artifacts.audit_log`, which declare them;
the audit log is append-only on both engines: :meth:`Connection.append_only`). Older databases
are migrated in place on open,
inside one transaction, keeping every verdict. Verdicts saved before readers were named have an empty
reader; the migration names them :data:`LEGACY_READER`, a name no reader can take, so they
stay visible as one reader in every table and export and nobody can change them.

Who acts: a store opened for the dashboard acts for its signed-in user (:meth:`ReviewStore.acting`);
one opened without an actor (the command line, a script) acts for the process's operator, an
admin (:func:`cxr_core.access.roles.operator`), as whoever holds the database holds its data anyway.
Calls, drafts, reveals and positions are saved under a signed-in user's own name only.

Where: ``$CXR_REVIEW_DB`` when set (a PostgreSQL URL or a SQLite file), else the file
``$CXR_REVIEW_DIR/review.sqlite3`` (default ``~/.cxr/review.sqlite3``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from cxr_core.access import roles
from cxr_core.access.pseudonym import Pseudonymiser, key_path
from cxr_core.access.roles import Actor, operator
from cxr_core.artifacts import audit_log, user_store
from cxr_core.artifacts.audit_log import AuditLog
from cxr_core.artifacts.database import Connection, Database, is_database_url
from cxr_core.artifacts.user_store import UserStore
from cxr_core.errors import ReviewStoreError
from cxr_core.utils.csv_safe import write_records_csv
from cxr_core.utils.paths import state_dir

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 6
VERDICTS: tuple[str, ...] = ("agree", "model_wrong", "label_wrong", "unsure")
FINDINGS: tuple[str, ...] = ("present", "absent", "unsure")
MODES: tuple[str, ...] = ("unblinded", "blind_labels", "blind_all")
"""unblinded: label and model shown; blind_labels: model shown, label hidden until saved;
blind_all: both hidden until the reader has saved their own finding."""
REASONS: tuple[str, ...] = (
    "",
    "subtle finding",
    "image quality",
    "positioning or artefact",
    "support device",
    "chronic or prior change",
    "label ambiguous",
    "other",
)
DB_NAME = "review.sqlite3"
LEGACY_READER = "unnamed (before readers)"
"""The reader of verdicts saved before readers were named (reserved: nobody can save under it)."""
EXPORT_COLUMNS: tuple[str, ...] = (
    "session_id",
    "session_name",
    "checkpoint",
    "eval_run",
    "mode",
    "image_id",
    "class_name",
    "reviewer",
    "finding",
    "verdict",
    "confidence",
    "reason",
    "note",
    "point_x",
    "point_y",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "updated",
)
_BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")

_VERDICT_COLUMNS = """
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL,
    class_name TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    finding TEXT CHECK (finding IS NULL OR finding IN ('present', 'absent', 'unsure')),
    verdict TEXT CHECK (verdict IS NULL OR verdict IN ('agree', 'model_wrong', 'label_wrong', 'unsure')),
    confidence INTEGER CHECK (confidence IS NULL OR confidence BETWEEN 1 AND 5),
    reason TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    point_x REAL,
    point_y REAL,
    box_x0 REAL,
    box_y0 REAL,
    box_x1 REAL,
    box_y1 REAL,
    updated TEXT NOT NULL
"""

_TABLES = f"""
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    eval_run TEXT NOT NULL,
    filters TEXT NOT NULL DEFAULT '{{}}',
    created TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    mode TEXT NOT NULL DEFAULT 'unblinded',
    classes TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS verdicts (
    {_VERDICT_COLUMNS},
    UNIQUE (session_id, image_id, class_name, reviewer)
);
CREATE TABLE IF NOT EXISTS verdict_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {_VERDICT_COLUMNS}
);
CREATE TABLE IF NOT EXISTS reader_positions (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    reviewer TEXT NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    image_id TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL,
    PRIMARY KEY (session_id, reviewer)
);
CREATE TABLE IF NOT EXISTS adjudications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL,
    class_name TEXT NOT NULL,
    label INTEGER NOT NULL CHECK (label IN (0, 1)),
    adjudicator TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reveals (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    reader TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (session_id, reader)
);
CREATE TABLE IF NOT EXISTS drafts (
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    image_id TEXT NOT NULL,
    class_name TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    finding TEXT CHECK (finding IS NULL OR finding IN ('present', 'absent', 'unsure')),
    confidence INTEGER CHECK (confidence IS NULL OR confidence BETWEEN 1 AND 5),
    reason TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    point_x REAL,
    point_y REAL,
    box_x0 REAL,
    box_y0 REAL,
    box_x1 REAL,
    box_y1 REAL,
    updated TEXT NOT NULL,
    PRIMARY KEY (session_id, image_id, class_name, reviewer)
);
CREATE INDEX IF NOT EXISTS verdict_history_key ON verdict_history (session_id, image_id, class_name, reviewer);
"""

_AUTH_TABLES = f"{user_store.TABLE};{audit_log.TABLE}"
"""Who may do what, and who did: the users (with roles) and the append-only audit log."""

_FIELDS = (
    "session_id",
    "image_id",
    "class_name",
    "reviewer",
    "finding",
    "verdict",
    "confidence",
    "reason",
    "note",
    "point_x",
    "point_y",
    *_BOX_COLUMNS,
    "updated",
)

_DRAFT_FIELDS = tuple(f for f in _FIELDS if f != "verdict")
_KEY = ("session_id", "image_id", "class_name", "reviewer")


def _upsert(table: str, fields: Sequence[str]) -> str:
    """Insert a row or replace the values of the row with the same key (SQLite 3.24+ and PostgreSQL)."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in fields if c not in _KEY)
    return (
        f"INSERT INTO {table} ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))}) "
        f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {updates}"
    )


_UPSERT_VERDICT = _upsert("verdicts", _FIELDS)
_UPSERT_DRAFT = _upsert("drafts", _DRAFT_FIELDS)
_INSERT_HISTORY = (
    f"INSERT INTO verdict_history ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})"
)
_DELETE_DRAFT = (
    "DELETE FROM drafts WHERE session_id = ? AND image_id = ? AND class_name = ? AND reviewer = ?"
)


def default_review_dir() -> Path:
    """``$CXR_REVIEW_DIR`` when set, else ``~/.cxr`` (the install's state folder)."""
    return state_dir()


def default_review_db() -> str:
    """``$CXR_REVIEW_DB`` when set (a PostgreSQL URL or a SQLite file), else the folder
    :func:`default_review_dir`."""
    env = os.environ.get("CXR_REVIEW_DB", "").strip()
    return env or str(default_review_dir())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def clean_reader(name: object) -> str:
    """A reader's name stripped; an empty one is refused (every verdict must say who gave it)."""
    clean = " ".join(str(name or "").split())
    if not clean:
        raise ReviewStoreError(
            "a verdict needs the reader's name or initials; enter them before saving"
        )
    if len(clean) > 64:
        raise ReviewStoreError(f"reader name '{clean[:20]}…' is longer than 64 characters")
    if clean.casefold() == LEGACY_READER.casefold():
        raise ReviewStoreError(
            f"'{LEGACY_READER}' marks verdicts saved before readers were named; "
            "enter your own name or initials"
        )
    return clean


@dataclass(frozen=True)
class ReviewSession:
    """A team's pass over one evaluation run; ``position`` is the legacy single-reader position."""

    id: int
    name: str
    checkpoint: str
    eval_run: str
    filters: dict = field(default_factory=dict)
    created: str = ""
    position: int = 0
    mode: str = "unblinded"
    classes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    session_id: int
    image_id: str
    class_name: str
    verdict: str | None
    note: str
    reviewer: str
    updated: str
    finding: str | None = None
    confidence: int | None = None
    reason: str = ""
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    """(x0, y0, x1, y1), top-left and bottom-right corners as fractions of the image's width and height."""


@dataclass(frozen=True)
class Call:
    """What a reader says about one finding of a film: their call (present / absent / unsure), the
    verdict on the model it implies, how sure, why, and where (fractions of the image, as in
    :class:`Verdict`). A draft is a call not saved yet, so it may still lack the call itself."""

    class_name: str
    finding: str | None = None
    verdict: str | None = None
    confidence: int | None = None
    reason: str = ""
    note: str = ""
    point: Sequence[float] | None = None
    box: Sequence[float] | None = None


@dataclass(frozen=True)
class Draft:
    """A reader's unsaved call on one finding of a film: kept so that leaving the film, a reload or a
    server restart loses nothing; never a verdict (nothing that counts verdicts reads drafts)."""

    session_id: int
    image_id: str
    class_name: str
    reviewer: str
    finding: str | None
    confidence: int | None
    reason: str
    note: str
    point: tuple[float, float] | None
    box: tuple[float, float, float, float] | None
    updated: str


@dataclass(frozen=True)
class Adjudication:
    session_id: int
    image_id: str
    class_name: str
    label: int
    adjudicator: str
    note: str
    updated: str


class ReviewStore:
    """Sessions, verdicts, their history and adjudications in one SQLite file (created on first use)."""

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        *,
        timeout_s: float = 30.0,
        actor: Actor | None = None,
    ) -> None:
        """``folder``: the folder of ``review.sqlite3``, or a PostgreSQL URL (``postgresql://…``);
        None: :func:`default_review_db`."""
        target = str(folder) if folder is not None else default_review_db()
        self.target = target  # what opens this database again: a folder or a URL
        self.timeout_s = timeout_s
        if is_database_url(target):
            self.folder = None
            self._db = Database(
                target,
                ReviewStoreError,
                name="review database",
                timeout_s=timeout_s,
                pragma_store="review",
            )
        else:
            self.folder = Path(target).expanduser()
            if self.folder.suffix == Path(DB_NAME).suffix:  # CXR_REVIEW_DB may name the file
                self.folder = self.folder.parent
            self._db = Database(
                self.folder / DB_NAME,
                ReviewStoreError,
                name="review database",
                timeout_s=timeout_s,
                pragma_store="review",
            )
        self.path: Path | str = self.folder / DB_NAME if self.folder is not None else self._db.where
        self.actor = actor if actor is not None else operator()
        self.audit = AuditLog(self._connect)
        self.users = UserStore(self._connect, self.audit)
        try:
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True)
            self._db.migrate("review", SCHEMA_VERSION, self._upgrade)
        except (OSError, ReviewStoreError, self._db.driver_error) as exc:
            raise ReviewStoreError(
                f"cannot open the review database {self.path} ({exc}); set CXR_REVIEW_DIR to a "
                "writable folder, or CXR_REVIEW_DB to a reachable PostgreSQL database"
            ) from None

    def pseudonymiser(self) -> Pseudonymiser:
        """The install's pseudonymiser: its key beside this database unless ``$CXR_PSEUDONYM_KEY`` names one."""
        return Pseudonymiser.for_install(key_path(self.folder))

    def acting(self, actor: Actor) -> ReviewStore:
        """This store acting for ``actor``: their role is checked and their name audited on every change."""
        bound = copy.copy(self)
        bound.actor = actor
        return bound

    def _acting_as(self, action: str, name: object, what: str) -> str:
        """The reader name ``what`` is saved under, once the actor's role allows ``action``: a
        signed-in user's own name (another is refused), else ``name`` as given (a local install's
        single user, the command line's operator)."""
        self.actor.require(action)
        return clean_reader(self.actor.as_self(str(name or ""), what))

    def _audit(
        self, conn: Connection, action: str, session_id: int, film: str = "", **detail
    ) -> None:
        """One audit event inside the change's own transaction: both land, or neither."""
        audit_log.write_entry(
            conn,
            self.actor,
            action,
            film=film,
            target=f"review session {session_id}",
            detail=detail,
        )

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """One transaction per call: commits on success, rolls back on error."""
        with self._db.connect() as conn:
            yield conn

    # -- schema -----------------------------------------------------------------------------
    def _upgrade(self, conn: Connection, version: int) -> None:
        """Create the tables, or bring older ones up to :data:`SCHEMA_VERSION` (inside the
        migration's one transaction, under the write lock)."""
        tables = conn.tables()
        if "verdicts" in tables and version == 0:
            self._from_v0(conn)
        conn.executescript(_TABLES)
        self._to_v3(conn)
        conn.executescript(_AUTH_TABLES)
        conn.append_only("audit_log")
        if "verdicts" in tables:
            logger.info(
                "migrated review database %s from schema %d to %d",
                self.path,
                version,
                SCHEMA_VERSION,
            )

    def _from_v0(self, conn: Connection) -> None:
        """Single-reader layout -> per-reader verdicts; every old verdict becomes one row and one history entry."""
        columns = conn.columns("sessions")
        if "mode" not in columns:
            conn.execute("ALTER TABLE sessions ADD COLUMN mode TEXT NOT NULL DEFAULT 'unblinded'")
        if "classes" not in columns:
            conn.execute("ALTER TABLE sessions ADD COLUMN classes TEXT NOT NULL DEFAULT '[]'")
        conn.execute("ALTER TABLE verdicts RENAME TO verdicts_v0")
        conn.executescript(_TABLES)
        old = "session_id, image_id, class_name, reviewer, verdict, note, updated"
        conn.execute(f"INSERT INTO verdicts ({old}) SELECT {old} FROM verdicts_v0")
        conn.execute(
            f"INSERT INTO verdict_history ({old}) SELECT {old} FROM verdicts_v0 ORDER BY updated"
        )
        moved = conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        conn.execute("DROP TABLE verdicts_v0")
        logger.info(
            "migrated review database %s from the single-reader layout (%d verdict(s) kept)",
            self.path,
            moved,
        )

    def _to_v3(self, conn: Connection) -> None:
        """Schema 2 -> 3: a box for "where", and an explicit name for verdicts saved before readers were named."""
        for table in ("verdicts", "verdict_history"):
            columns = conn.columns(table)
            for column in _BOX_COLUMNS:
                if column not in columns:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} REAL")
            renamed = conn.execute(
                f"UPDATE {table} SET reviewer = ? WHERE TRIM(reviewer) = ''", (LEGACY_READER,)
            ).rowcount
            if renamed and table == "verdicts":
                logger.info(
                    "review database %s: %d verdict(s) saved before readers were named are now by '%s'",
                    self.path,
                    renamed,
                    LEGACY_READER,
                )

    def schema_version(self) -> int:
        with self._connect() as conn:
            return conn.version("review")

    # -- sessions ---------------------------------------------------------------------------
    def create_session(
        self,
        name: str,
        checkpoint: str,
        eval_run: str,
        filters: Mapping | None = None,
        *,
        mode: str = "unblinded",
        classes: Sequence[str] = (),
    ) -> ReviewSession:
        """A new session; ``classes`` are the findings its readers call on every film (empty: all)."""
        self.actor.require(roles.CREATE_SESSION)
        if not str(name).strip():
            raise ReviewStoreError(
                "a review session needs a name (e.g. your initials and the date)"
            )
        if mode not in MODES:
            raise ReviewStoreError(f"reading mode '{mode}' is not one of: {', '.join(MODES)}")
        created = _now()
        with self._connect() as conn:
            cur = conn.execute(
                "INSERT INTO sessions (name, checkpoint, eval_run, filters, created, mode, classes) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    str(name).strip(),
                    str(checkpoint),
                    str(eval_run),
                    json.dumps(dict(filters or {}), sort_keys=True),
                    created,
                    mode,
                    json.dumps([str(c) for c in classes]),
                ),
            )
            session_id = int(cur.fetchone()[0])
            self._audit(
                conn, audit_log.SESSION_CREATED, session_id, name=str(name).strip(), mode=mode
            )
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

    def save_position(
        self, session_id: int, position: int, reviewer: str | None = None, image_id: str = ""
    ) -> None:
        """Remember where a reader is (by index and by image), so the session resumes there.

        Without ``reviewer`` the session's shared legacy position is set.
        """
        if int(position) < 0:
            raise ReviewStoreError(f"review position must be 0 or more, not {position}")
        if reviewer is not None:
            reviewer = self.actor.as_self(reviewer, "a reading position")
        with self._connect() as conn:
            exists = conn.execute(
                "SELECT 1 FROM sessions WHERE id = ?", (int(session_id),)
            ).fetchone()
            if exists is None:
                raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}")
            if reviewer is None:
                conn.execute(
                    "UPDATE sessions SET position = ? WHERE id = ?",
                    (int(position), int(session_id)),
                )
            else:
                conn.execute(
                    """INSERT INTO reader_positions (session_id, reviewer, position, image_id, updated)
                       VALUES (?, ?, ?, ?, ?) ON CONFLICT (session_id, reviewer) DO UPDATE SET
                       position = excluded.position, image_id = excluded.image_id, updated = excluded.updated""",
                    (int(session_id), clean_reader(reviewer), int(position), str(image_id), _now()),
                )

    def reader_position(self, session_id: int, reviewer: str) -> tuple[int, str] | None:
        """(index, image id) where ``reviewer`` stopped in a session, or None before their first move."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT position, image_id FROM reader_positions WHERE session_id = ? AND reviewer = ?",
                (int(session_id), str(reviewer).strip()),
            ).fetchone()
        return (int(row["position"]), row["image_id"]) if row is not None else None

    def update_filters(self, session_id: int, filters: Mapping, position: int = 0) -> None:
        """Store a session's filters (readers' own positions are kept, by image)."""
        self.actor.require(roles.CREATE_SESSION)
        if int(position) < 0:
            raise ReviewStoreError(f"review position must be 0 or more, not {position}")
        with self._connect() as conn:
            cur = conn.execute(
                "UPDATE sessions SET filters = ?, position = ? WHERE id = ?",
                (json.dumps(dict(filters), sort_keys=True), int(position), int(session_id)),
            )
            if cur.rowcount:
                self._audit(conn, audit_log.SESSION_CHANGED, int(session_id), filters=dict(filters))
        if cur.rowcount == 0:
            raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}")

    # -- verdicts ---------------------------------------------------------------------------
    def record(
        self,
        session_id: int,
        image_id: str,
        class_name: str,
        verdict: str | None = None,
        note: str = "",
        reviewer: str = "",
        *,
        finding: str | None = None,
        confidence: int | None = None,
        reason: str = "",
        point: Sequence[float] | None = None,
        box: Sequence[float] | None = None,
    ) -> Verdict:
        """Insert or change ``reviewer``'s verdict on one (session, image, class); every save is kept in history.

        ``verdict`` (on the model) and/or ``finding`` (the reader's own call) must be given.
        ``point`` is (x, y) and ``box`` (x0, y0, x1, y1) (any two opposite corners), as fractions of
        the image's width and height. In a blinded session a reader who has revealed the session's labels
        and model output (:meth:`reveal`) can change the calls they saved before, but not add one.
        """
        call = Call(class_name, finding, verdict, confidence, reason, note, point, box)
        return self.save_film(session_id, image_id, reviewer, [call])[0]

    def save_film(
        self, session_id: int, image_id: str, reviewer: str, calls: Sequence[Call]
    ) -> list[Verdict]:
        """Store ``reviewer``'s calls on one film in one transaction: every call is saved, or none is.

        Each saved call replaces the reader's draft of that finding (:meth:`save_draft`), which is
        discarded in the same transaction, so a call is never both a draft and a verdict.
        """
        reviewer = self._acting_as(roles.CALL, reviewer, "a call")
        if not str(image_id):
            raise ReviewStoreError("a verdict needs both an image id and a class name")
        when = _now()
        rows = [
            (int(session_id), str(image_id), c.class_name, reviewer, *_checked(c, True), when)
            for c in calls
        ]
        try:
            with self._connect() as conn:
                conn.lock_writes()  # a reveal from another tab cannot slip between check and save
                for values in rows:
                    self._refuse_unblinded_call(conn, values[0], values[1], values[2], reviewer)
                    conn.execute(_UPSERT_VERDICT, values)
                    conn.execute(_INSERT_HISTORY, values)
                    conn.execute(_DELETE_DRAFT, values[:4])
                    self._audit(
                        conn,
                        audit_log.CALL_SAVED,
                        values[0],
                        values[1],
                        reader=reviewer,
                        finding_of=values[2],
                        call=values[4],
                        verdict=values[5],
                    )
        except self._db.integrity_error:
            raise ReviewStoreError(
                f"review session {session_id} does not exist in {self.path}"
            ) from None
        return [_verdict(dict(zip(_FIELDS, values))) for values in rows]

    @staticmethod
    def _refuse_unblinded_call(
        conn: Connection, session_id: int, image_id: str, class_name: str, reviewer: str
    ) -> None:
        """A new call in a blinded session by a reader who revealed its labels and model output is an error."""
        row = conn.execute(
            """SELECT r.time FROM reveals r JOIN sessions s ON s.id = r.session_id
               WHERE r.session_id = ? AND r.reader = ? AND s.mode != 'unblinded' AND NOT EXISTS (
                   SELECT 1 FROM verdicts v WHERE v.session_id = r.session_id AND v.reviewer = r.reader
                   AND v.image_id = ? AND v.class_name = ?)""",
            (session_id, reviewer, image_id, class_name),
        ).fetchone()
        if row is not None:
            raise ReviewStoreError(
                f"you revealed the labels and model output of this session at {_when(row['time'])}; calls you "
                f"save now would not be blinded, so your call on {class_name} of {image_id} was not saved "
                "(calls you saved before revealing can still be changed)"
            )

    def verdict(
        self, session_id: int, image_id: str, class_name: str, reviewer: str | None = None
    ) -> Verdict | None:
        """``reviewer``'s verdict; without a reader, the most recently saved one of any reader."""
        query = "SELECT * FROM verdicts WHERE session_id = ? AND image_id = ? AND class_name = ?"
        args: tuple = (int(session_id), str(image_id), str(class_name))
        if reviewer is not None:
            query, args = query + " AND reviewer = ?", (*args, str(reviewer).strip())
        with self._connect() as conn:
            row = conn.execute(query + " ORDER BY updated DESC LIMIT 1", args).fetchone()
        return _verdict(row) if row is not None else None

    def verdicts(
        self,
        session_id: int | None = None,
        reviewer: str | None = None,
        image_id: str | None = None,
    ) -> list[Verdict]:
        clauses, args = [], []
        if session_id is not None:
            clauses.append("session_id = ?")
            args.append(int(session_id))
        if reviewer is not None:
            clauses.append("reviewer = ?")
            args.append(str(reviewer).strip())
        if image_id is not None:
            clauses.append("image_id = ?")
            args.append(str(image_id))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM verdicts{where} ORDER BY session_id, image_id, class_name, reviewer",
                args,
            ).fetchall()
        return [_verdict(r) for r in rows]

    def history(
        self,
        session_id: int,
        image_id: str | None = None,
        class_name: str | None = None,
        reviewer: str | None = None,
    ) -> list[Verdict]:
        """Every save, oldest first (a changed verdict keeps all its earlier versions here)."""
        clauses, args = ["session_id = ?"], [int(session_id)]
        for column, value in (
            ("image_id", image_id),
            ("class_name", class_name),
            ("reviewer", reviewer),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(str(value))
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT * FROM verdict_history WHERE {' AND '.join(clauses)} ORDER BY id", args
            ).fetchall()
        return [_verdict(r) for r in rows]

    def readers(self, session_id: int) -> list[str]:
        """Readers with at least one verdict in the session, sorted."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT DISTINCT reviewer FROM verdicts WHERE session_id = ? ORDER BY reviewer",
                (int(session_id),),
            ).fetchall()
        return [r[0] for r in rows]

    # -- drafts -----------------------------------------------------------------------------
    def save_draft(self, session_id: int, image_id: str, reviewer: str, call: Call) -> Draft:
        """Keep ``reviewer``'s unsaved call on one finding of a film (replacing their earlier draft of it).

        A draft belongs to its reader: :meth:`drafts` only returns a reader's own, and nothing that
        counts verdicts (agreement, export, corrected labels, progress) reads this table.
        """
        reviewer = self._acting_as(roles.CALL, reviewer, "a draft")
        if not str(image_id):
            raise ReviewStoreError("a verdict needs both an image id and a class name")
        finding, _, *rest = _checked(call, False)
        values = (
            int(session_id),
            str(image_id),
            call.class_name,
            reviewer,
            finding,
            *rest,
            _now(),
        )
        try:
            with self._connect() as conn:
                conn.execute(_UPSERT_DRAFT, values)
        except self._db.integrity_error:
            raise ReviewStoreError(
                f"review session {session_id} does not exist in {self.path}"
            ) from None
        return _draft(dict(zip(_DRAFT_FIELDS, values)))

    def drafts(self, session_id: int, reviewer: str, image_id: str | None = None) -> list[Draft]:
        """``reviewer``'s drafts in a session (on one film when ``image_id`` is given); never another reader's."""
        query = "SELECT * FROM drafts WHERE session_id = ? AND reviewer = ?"
        args: tuple = (int(session_id), self.actor.as_self(reviewer, "a draft"))
        if image_id is not None:
            query, args = query + " AND image_id = ?", (*args, str(image_id))
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY image_id, class_name", args).fetchall()
        return [_draft(r) for r in rows]

    def discard_draft(self, session_id: int, image_id: str, class_name: str, reviewer: str) -> None:
        """Forget ``reviewer``'s draft of one finding (e.g. changed back to what they had saved)."""
        reviewer = self.actor.as_self(reviewer, "a draft")
        with self._connect() as conn:
            conn.execute(_DELETE_DRAFT, (int(session_id), str(image_id), str(class_name), reviewer))

    # -- blinding ---------------------------------------------------------------------------
    def reveal(self, session_id: int, reader: str) -> str:
        """Record that ``reader`` sees a blinded session's labels, model output and every reader's calls
        before reading all of its films; returns the time (UTC) of their first reveal, which is the one kept.

        From then on :meth:`record` refuses their calls on findings they had not called yet.
        """
        reader = self._acting_as(roles.REVEAL, reader, "a reveal")
        with self._connect() as conn:
            conn.lock_writes()  # no call of this reader is half-way between its check and save
            row = conn.execute(
                "SELECT mode FROM sessions WHERE id = ?", (int(session_id),)
            ).fetchone()
            if row is None:
                raise ReviewStoreError(f"review session {session_id} does not exist in {self.path}")
            if row["mode"] == "unblinded":
                raise ReviewStoreError(
                    f"review session {session_id} is unblinded: its labels and model output "
                    "are already shown, there is nothing to reveal"
                )
            added = conn.execute(
                "INSERT INTO reveals (session_id, reader, time) VALUES (?, ?, ?) "
                "ON CONFLICT (session_id, reader) DO NOTHING",
                (int(session_id), reader, _now()),
            ).rowcount
            if added:
                self._audit(conn, audit_log.REVEAL, int(session_id), reader=reader)
            return conn.execute(
                "SELECT time FROM reveals WHERE session_id = ? AND reader = ?",
                (int(session_id), reader),
            ).fetchone()["time"]

    def revealed_at(self, session_id: int, reader: str) -> str | None:
        """When ``reader`` revealed a blinded session's labels and model output (UTC, ISO 8601), or None."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT time FROM reveals WHERE session_id = ? AND reader = ?",
                (int(session_id), " ".join(str(reader).split())),
            ).fetchone()
        return row["time"] if row is not None else None

    # -- adjudication -----------------------------------------------------------------------
    def adjudicate(
        self,
        session_id: int,
        image_id: str,
        class_name: str,
        label: int,
        adjudicator: str,
        note: str = "",
    ) -> Adjudication:
        """Record the final label (1 present, 0 absent) of one finding; earlier entries stay in the table."""
        adjudicator = self._acting_as(roles.ADJUDICATE, adjudicator, "an adjudication")
        if label not in (0, 1) or isinstance(label, bool):
            raise ReviewStoreError(
                f"an adjudicated label is 1 (present) or 0 (absent), not {label!r}"
            )
        entry = Adjudication(
            int(session_id),
            str(image_id),
            str(class_name),
            int(label),
            adjudicator,
            str(note),
            _now(),
        )
        try:
            with self._connect() as conn:
                conn.execute(
                    "INSERT INTO adjudications (session_id, image_id, class_name, label, adjudicator, note, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.session_id,
                        entry.image_id,
                        entry.class_name,
                        entry.label,
                        entry.adjudicator,
                        entry.note,
                        entry.updated,
                    ),
                )
                self._audit(
                    conn,
                    audit_log.ADJUDICATE,
                    entry.session_id,
                    entry.image_id,
                    finding_of=entry.class_name,
                    label=entry.label,
                )
        except self._db.integrity_error:
            raise ReviewStoreError(
                f"review session {session_id} does not exist in {self.path}"
            ) from None
        return entry

    def adjudications(self, session_id: int) -> list[Adjudication]:
        """The latest adjudication of each (image, class) in a session."""
        with self._connect() as conn:
            rows = conn.execute(
                """SELECT * FROM adjudications a WHERE session_id = ? AND id = (
                       SELECT MAX(id) FROM adjudications b WHERE b.session_id = a.session_id
                       AND b.image_id = a.image_id AND b.class_name = a.class_name)
                   ORDER BY image_id, class_name""",
                (int(session_id),),
            ).fetchall()
        return [
            Adjudication(
                int(r["session_id"]),
                r["image_id"],
                r["class_name"],
                int(r["label"]),
                r["adjudicator"],
                r["note"],
                r["updated"],
            )
            for r in rows
        ]

    # -- export -----------------------------------------------------------------------------
    def export_rows(self, session_id: int | None = None) -> list[dict]:
        """One row per reader verdict, joined with its session, in :data:`EXPORT_COLUMNS` order."""
        query = """SELECT v.*, s.name AS session_name, s.checkpoint, s.eval_run, s.mode
                   FROM verdicts v JOIN sessions s ON s.id = v.session_id"""
        args: tuple = ()
        if session_id is not None:
            query, args = query + " WHERE v.session_id = ?", (int(session_id),)
        with self._connect() as conn:
            rows = conn.execute(
                query + " ORDER BY v.session_id, v.image_id, v.class_name, v.reviewer", args
            ).fetchall()
        return [{k: r[k] for k in EXPORT_COLUMNS} for r in rows]

    def export_csv(self, path: str | os.PathLike, session_id: int | None = None) -> int:
        """Write verdicts to a CSV file (formula-safe, identifiable: for those whose role may export
        and see patient identifiers; pseudonymised exports go through
        :func:`cxr_core.evaluation.review.export_session`); returns the number of rows written."""
        self.actor.require(roles.EXPORT)
        self.actor.require(roles.VIEW_PATIENT_DATA)
        rows = self.export_rows(session_id)
        write_records_csv(path, rows, EXPORT_COLUMNS)
        return len(rows)


def _when(time: str) -> str:
    """A stored UTC time as people read it: 2026-12-01 20:05:11 UTC."""
    return f"{time[:19].replace('T', ' ')} UTC"


def _fractions(values: Sequence[float], name: str, form: str) -> tuple[float, ...]:
    """The coordinates of a point or box, each a fraction of the image's width or height (0 to 1)."""
    wrong = ReviewStoreError(f"a {name} is {form} as fractions of the image size, not {values!r}")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise wrong from None
    if len(out) != form.count(",") + 1:
        raise wrong
    if any(math.isnan(v) or not 0.0 <= v <= 1.0 for v in out):
        raise ReviewStoreError(
            f"{name} {out} lies outside the image; every coordinate must be between 0 and 1"
        )
    return out


def _confidence(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in range(1, 6):
        raise ReviewStoreError(f"confidence must be a whole number from 1 to 5, not {value!r}")
    return int(value)


def _corners(box: Sequence[float] | None) -> tuple:
    """(x0, y0, x1, y1) of a box given by any two opposite corners, top-left first; Nones without a box."""
    if box is None:
        return (None,) * 4
    x0, y0, x1, y1 = _fractions(box, "box", "(x0, y0, x1, y1)")
    corners = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    if corners[0] == corners[2] or corners[1] == corners[3]:
        raise ReviewStoreError(
            f"box {tuple(box)} has no area; drag across the region, or click to mark a point"
        )
    return corners


def _checked(call: Call, need_call: bool) -> tuple:
    """A call's stored values (finding, verdict, confidence, reason, note, point x/y, box corners), checked.

    ``need_call``: a verdict must say something (a call or a verdict); a draft may hold only a mark or a note.
    """
    if need_call and call.verdict is None and call.finding is None:
        raise ReviewStoreError(
            "a verdict needs the reader's call (finding present/absent/unsure) or a verdict"
        )
    if call.verdict is not None and call.verdict not in VERDICTS:
        raise ReviewStoreError(f"verdict '{call.verdict}' is not one of: {', '.join(VERDICTS)}")
    if call.finding is not None and call.finding not in FINDINGS:
        raise ReviewStoreError(f"finding '{call.finding}' is not one of: {', '.join(FINDINGS)}")
    if not str(call.class_name):
        raise ReviewStoreError("a verdict needs both an image id and a class name")
    if call.reason not in REASONS:
        raise ReviewStoreError(
            f"reason '{call.reason}' is not one of: {', '.join(r for r in REASONS if r)}"
        )
    point = _fractions(call.point, "point", "(x, y)") if call.point is not None else (None, None)
    return (
        call.finding,
        call.verdict,
        _confidence(call.confidence),
        str(call.reason),
        str(call.note),
        *point,
        *_corners(call.box),
    )


def _session(row: Mapping) -> ReviewSession:
    return ReviewSession(
        int(row["id"]),
        row["name"],
        row["checkpoint"],
        row["eval_run"],
        json.loads(row["filters"] or "{}"),
        row["created"],
        int(row["position"]),
        row["mode"],
        tuple(json.loads(row["classes"] or "[]")),
    )


def _mark(row: Mapping) -> tuple[tuple | None, tuple | None]:
    """(point, box) of a stored row."""
    point = (float(row["point_x"]), float(row["point_y"])) if row["point_x"] is not None else None
    box = tuple(float(row[c]) for c in _BOX_COLUMNS) if row["box_x0"] is not None else None
    return point, box


def _draft(row: Mapping) -> Draft:
    point, box = _mark(row)
    return Draft(
        int(row["session_id"]),
        row["image_id"],
        row["class_name"],
        row["reviewer"],
        row["finding"],
        int(row["confidence"]) if row["confidence"] is not None else None,
        row["reason"],
        row["note"],
        point,
        box,
        row["updated"],
    )


def _verdict(row: Mapping) -> Verdict:
    point, box = _mark(row)
    return Verdict(
        int(row["session_id"]),
        row["image_id"],
        row["class_name"],
        row["verdict"],
        row["note"],
        row["reviewer"],
        row["updated"],
        row["finding"],
        int(row["confidence"]) if row["confidence"] is not None else None,
        row["reason"],
        point,
        box,
    )
