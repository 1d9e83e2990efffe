"""Review databases as earlier releases wrote them, for the migration tests of the store, the CLI and the page.

The schemas are copied verbatim from those releases (not from today's code, which would make
the migration test pass whatever the migration does). ``V0_ROWS`` are rows as the first,
single-reader release wrote them: its reviewer field was optional, so one verdict has none.
``V2_ROWS`` are rows as schema 2 wrote them after migrating such a file: the empty reader is
still there, next to a named reader's call with a point. ``V3_ROWS`` are rows as schema 3 (the
release before reveals) wrote them: a blinded and an unblinded session, two readers with points,
boxes and a changed call, the migrated unnamed reader, positions and adjudications. ``V4_ROWS`` are
rows as schema 4 (the release before drafts) wrote them: a blinded session with two readers, one of
whom revealed it, history, positions and adjudications. ``V5_SCHEMA`` is schema 5 (the release
before users and the audit log): schema 4 and readers' drafts; ``V5_ROWS`` are ``V4_ROWS`` and two
drafts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

V0_SCHEMA = """
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

V0_ROWS = """
INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position) VALUES
    ('AB 2024-05-01', '/ckpt/nih_small', 'val',
     '{"class": "Edema", "order": "highest probability first", "outcomes": ["FP", "FN"]}',
     '2026-12-01T20:05:11.120+00:00', 4),
    ('second', '/ckpt/nih_small', 'test', '{}', '2026-12-01T20:06:00.000+00:00', 0);
INSERT INTO verdicts VALUES
    (1, '00000001_000.png', 'Edema', 'model_wrong', 'no edema', 'A', '2026-12-01T20:09:59.001+00:00'),
    (1, '00000002_000.png', 'Edema', 'agree', '', '', '2026-12-01T20:10:30.000+00:00'),
    (2, '00000003_000.png', 'Mass', 'label_wrong', 'mass RUL', 'CD', '2026-12-01T20:11:00.000+00:00');
"""

_V2_VERDICT_COLUMNS = """
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
    updated TEXT NOT NULL
"""

V2_SCHEMA = f"""
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
    {_V2_VERDICT_COLUMNS},
    UNIQUE (session_id, image_id, class_name, reviewer)
);
CREATE TABLE IF NOT EXISTS verdict_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {_V2_VERDICT_COLUMNS}
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
CREATE INDEX IF NOT EXISTS verdict_history_key ON verdict_history (session_id, image_id, class_name, reviewer);
PRAGMA user_version = 2;
"""

V2_ROWS = """
INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position, mode, classes) VALUES
    ('migrated', '/ckpt/nih_small', 'val', '{}', '2026-12-01T20:05:11.120+00:00', 0, 'unblinded', '[]');
INSERT INTO verdicts (session_id, image_id, class_name, reviewer, finding, verdict, confidence, reason, note,
                      point_x, point_y, updated) VALUES
    (1, '00000002_000.png', 'Edema', '', NULL, 'agree', NULL, '', '', NULL, NULL, '2026-12-01T20:10:30.000+00:00'),
    (1, '00000002_000.png', 'Edema', 'CD', 'absent', 'model_wrong', 4, 'subtle finding', 'clear bases', 0.25, 0.75,
     '2026-12-02T09:00:00.000+00:00');
INSERT INTO verdict_history (session_id, image_id, class_name, reviewer, finding, verdict, confidence, reason, note,
                             point_x, point_y, updated) VALUES
    (1, '00000002_000.png', 'Edema', '', NULL, 'agree', NULL, '', '', NULL, NULL, '2026-12-01T20:10:30.000+00:00'),
    (1, '00000002_000.png', 'Edema', 'CD', 'absent', 'model_wrong', 4, 'subtle finding', 'clear bases', 0.25, 0.75,
     '2026-12-02T09:00:00.000+00:00');
INSERT INTO reader_positions VALUES (1, 'CD', 1, '00000002_000.png', '2026-12-02T09:00:00.000+00:00');
INSERT INTO adjudications (session_id, image_id, class_name, label, adjudicator, note, updated) VALUES
    (1, '00000002_000.png', 'Edema', 0, 'ADJ', '', '2026-12-02T10:00:00.000+00:00');
"""


def old_database(folder: Path, rows: str = V0_ROWS, schema: str = V0_SCHEMA) -> Path:
    """A review database in ``folder`` as an earlier release left it (default: the single-reader one)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "review.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(schema + rows)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return path


_V3_VERDICT_COLUMNS = """
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

V3_SCHEMA = f"""
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
    {_V3_VERDICT_COLUMNS},
    UNIQUE (session_id, image_id, class_name, reviewer)
);
CREATE TABLE IF NOT EXISTS verdict_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {_V3_VERDICT_COLUMNS}
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
CREATE INDEX IF NOT EXISTS verdict_history_key ON verdict_history (session_id, image_id, class_name, reviewer);
PRAGMA user_version = 3;
"""

V3_ROWS = """
INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position, mode, classes) VALUES
    ('blind team', '/ckpt/nih_small', 'val', '{"threshold_set": "card", "thresholds": {"Edema": 0.4, "Mass": 0.6}}',
     '2027-01-10T08:00:00.000+00:00', 0, 'blind_all', '["Edema", "Mass"]'),
    ('open', '/ckpt/nih_small', 'test', '{}', '2027-01-11T08:00:00.000+00:00', 0, 'unblinded', '[]');
INSERT INTO verdicts (session_id, image_id, class_name, reviewer, finding, verdict, confidence, reason, note,
                      point_x, point_y, box_x0, box_y0, box_x1, box_y1, updated) VALUES
    (1, 'a.png', 'Edema', 'AB', 'present', 'agree', 5, '', 'bat wings', 0.4, 0.6, NULL, NULL, NULL, NULL,
     '2027-01-10T08:05:00.000+00:00'),
    (1, 'a.png', 'Mass', 'AB', 'absent', 'agree', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-01-10T08:05:00.000+00:00'),
    (1, 'a.png', 'Edema', 'CD', 'unsure', 'unsure', 2, 'image quality', '', NULL, NULL, 0.1, 0.2, 0.5, 0.7,
     '2027-01-10T09:00:00.000+00:00'),
    (1, 'b.png', 'Mass', 'CD', 'present', 'label_wrong', 3, 'subtle finding', 'RUL', NULL, NULL, 0.6, 0.1, 0.8, 0.3,
     '2027-01-10T09:02:00.000+00:00'),
    (2, 'c.png', 'Edema', 'unnamed (before readers)', NULL, 'agree', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2026-12-01T20:10:30.000+00:00');
INSERT INTO verdict_history (session_id, image_id, class_name, reviewer, finding, verdict, confidence, reason, note,
                             point_x, point_y, box_x0, box_y0, box_x1, box_y1, updated) VALUES
    (2, 'c.png', 'Edema', 'unnamed (before readers)', NULL, 'agree', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2026-12-01T20:10:30.000+00:00'),
    (1, 'a.png', 'Edema', 'AB', 'absent', 'model_wrong', 3, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-01-10T08:04:00.000+00:00'),
    (1, 'a.png', 'Edema', 'AB', 'present', 'agree', 5, '', 'bat wings', 0.4, 0.6, NULL, NULL, NULL, NULL,
     '2027-01-10T08:05:00.000+00:00'),
    (1, 'a.png', 'Mass', 'AB', 'absent', 'agree', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-01-10T08:05:00.000+00:00'),
    (1, 'a.png', 'Edema', 'CD', 'unsure', 'unsure', 2, 'image quality', '', NULL, NULL, 0.1, 0.2, 0.5, 0.7,
     '2027-01-10T09:00:00.000+00:00'),
    (1, 'b.png', 'Mass', 'CD', 'present', 'label_wrong', 3, 'subtle finding', 'RUL', NULL, NULL, 0.6, 0.1, 0.8, 0.3,
     '2027-01-10T09:02:00.000+00:00');
INSERT INTO reader_positions VALUES (1, 'AB', 1, 'b.png', '2027-01-10T08:05:01.000+00:00'),
                                    (1, 'CD', 0, 'a.png', '2027-01-10T09:02:01.000+00:00');
INSERT INTO adjudications (session_id, image_id, class_name, label, adjudicator, note, updated) VALUES
    (1, 'a.png', 'Edema', 1, 'ADJ', 'first look', '2027-01-10T10:00:00.000+00:00'),
    (1, 'a.png', 'Edema', 0, 'ADJ', 'on reflection', '2027-01-10T10:05:00.000+00:00');
"""


_V4_VERDICT_COLUMNS = _V3_VERDICT_COLUMNS

V4_SCHEMA = f"""
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
    {_V4_VERDICT_COLUMNS},
    UNIQUE (session_id, image_id, class_name, reviewer)
);
CREATE TABLE IF NOT EXISTS verdict_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    {_V4_VERDICT_COLUMNS}
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
CREATE INDEX IF NOT EXISTS verdict_history_key ON verdict_history (session_id, image_id, class_name, reviewer);
PRAGMA user_version = 4;
"""

V4_ROWS = """
INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position, mode, classes) VALUES
    ('blind pair', '/ckpt/nih_small', 'val', '{"threshold_set": "card", "thresholds": {"Edema": 0.4, "Mass": 0.6}}',
     '2027-02-01T08:00:00.000+00:00', 0, 'blind_labels', '["Edema", "Mass"]');
INSERT INTO verdicts (session_id, image_id, class_name, reviewer, finding, verdict, confidence, reason, note,
                      point_x, point_y, box_x0, box_y0, box_x1, box_y1, updated) VALUES
    (1, 'a.png', 'Edema', 'AB', 'present', 'agree', 4, '', 'bat wings', 0.4, 0.6, NULL, NULL, NULL, NULL,
     '2027-02-01T08:05:00.000+00:00'),
    (1, 'a.png', 'Mass', 'AB', 'absent', 'agree', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-02-01T08:05:00.000+00:00'),
    (1, 'a.png', 'Edema', 'CD', 'absent', 'model_wrong', 2, 'subtle finding', '', NULL, NULL, 0.1, 0.2, 0.5, 0.7,
     '2027-02-01T09:00:00.000+00:00');
INSERT INTO verdict_history (session_id, image_id, class_name, reviewer, finding, verdict, confidence, reason, note,
                             point_x, point_y, box_x0, box_y0, box_x1, box_y1, updated) VALUES
    (1, 'a.png', 'Edema', 'AB', 'unsure', 'unsure', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-02-01T08:04:00.000+00:00'),
    (1, 'a.png', 'Edema', 'AB', 'present', 'agree', 4, '', 'bat wings', 0.4, 0.6, NULL, NULL, NULL, NULL,
     '2027-02-01T08:05:00.000+00:00'),
    (1, 'a.png', 'Mass', 'AB', 'absent', 'agree', NULL, '', '', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-02-01T08:05:00.000+00:00'),
    (1, 'a.png', 'Edema', 'CD', 'absent', 'model_wrong', 2, 'subtle finding', '', NULL, NULL, 0.1, 0.2, 0.5, 0.7,
     '2027-02-01T09:00:00.000+00:00');
INSERT INTO reader_positions VALUES (1, 'AB', 1, 'b.png', '2027-02-01T08:05:01.000+00:00'),
                                    (1, 'CD', 0, 'a.png', '2027-02-01T09:00:01.000+00:00');
INSERT INTO adjudications (session_id, image_id, class_name, label, adjudicator, note, updated) VALUES
    (1, 'a.png', 'Edema', 1, 'ADJ', 'bat wings seen', '2027-02-01T10:00:00.000+00:00');
INSERT INTO reveals VALUES (1, 'CD', '2027-02-01T09:30:00.000+00:00');
"""

V5_SCHEMA = (
    V4_SCHEMA.replace("PRAGMA user_version = 4;", "")
    + """
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
PRAGMA user_version = 5;
"""
)

V5_ROWS = (
    V4_ROWS
    + """
INSERT INTO drafts (session_id, image_id, class_name, reviewer, finding, confidence, reason, note,
                    point_x, point_y, box_x0, box_y0, box_x1, box_y1, updated) VALUES
    (1, 'b.png', 'Edema', 'AB', 'present', 3, '', 'faint', 0.3, 0.4, NULL, NULL, NULL, NULL,
     '2027-03-01T08:00:00.000+00:00'),
    (1, 'b.png', 'Mass', 'CD', NULL, NULL, '', 'look again', NULL, NULL, NULL, NULL, NULL, NULL,
     '2027-03-01T08:01:00.000+00:00');
"""
)
