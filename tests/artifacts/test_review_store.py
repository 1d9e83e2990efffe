"""Review verdicts in SQLite and PostgreSQL: per-reader upserts with history, migration, concurrent writers,
export, validation, the reveal that ends a reader's blinded reading, and each reader's private drafts.

Every test taking ``store`` runs on both engines (``[sqlite]`` and ``[postgres]`` in its name; the
PostgreSQL run is skipped when the server cannot start); tests of SQLite files (old layouts, a
locked file) use SQLite only."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import sys
import threading

import pytest

from cxr_core.access.roles import Actor
from cxr_core.artifacts.review_store import (
    EXPORT_COLUMNS,
    LEGACY_READER,
    SCHEMA_VERSION,
    Call,
    ReviewStore,
    ReviewStoreError,
)
from cxr_core.errors import AccessDeniedError
from tests.review_fixtures import (
    V2_ROWS,
    V2_SCHEMA,
    V3_ROWS,
    V3_SCHEMA,
    V4_ROWS,
    V4_SCHEMA,
    V5_ROWS,
    V5_SCHEMA,
    old_database,
)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "postgres":
        return ReviewStore(request.getfixturevalue("postgres_db"))
    return ReviewStore(tmp_path / "reviews")


def test_default_folder_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "env_dir"))
    store = ReviewStore()
    assert store.path == tmp_path / "env_dir" / "review.sqlite3"
    assert store.path.is_file()


def test_session_round_trip_and_position(store):
    s = store.create_session(
        "AB 2024-05-01", "nih_small", "val", {"class": "Cardiomegaly", "outcome": "FP"}
    )
    assert s.position == 0 and s.filters == {"class": "Cardiomegaly", "outcome": "FP"}
    store.save_position(s.id, 17)
    assert store.session(s.id).position == 17
    other = store.create_session("CD", "other_ckpt", "val")
    assert [x.id for x in store.sessions()] == [other.id, s.id]
    assert [x.id for x in store.sessions("nih_small")] == [s.id]
    with pytest.raises(ReviewStoreError, match="does not exist"):
        store.save_position(9999, 1)
    with pytest.raises(ReviewStoreError, match="0 or more"):
        store.save_position(s.id, -1)
    with pytest.raises(ReviewStoreError, match="name"):
        store.create_session("  ", "c", "val")


def test_verdict_upsert_and_survives_reopen(store, tmp_path):
    s = store.create_session("r1", "ckpt", "val")
    store.record(s.id, "img1.png", "Cardiomegaly", "agree", note="clear", reviewer="AB")
    store.record(
        s.id, "img1.png", "Cardiomegaly", "label_wrong", note="label missed it", reviewer="AB"
    )
    store.record(s.id, "img1.png", "Pneumonia", "unsure", reviewer="AB")
    reopened = ReviewStore(store.target)
    v = reopened.verdict(s.id, "img1.png", "Cardiomegaly")
    assert (v.verdict, v.note, v.reviewer) == ("label_wrong", "label missed it", "AB")
    assert len(reopened.verdicts(s.id)) == 2
    assert reopened.session(s.id).name == "r1"
    assert reopened.verdict(s.id, "img2.png", "Cardiomegaly") is None


def test_invalid_verdict_and_unknown_session_rejected(store):
    s = store.create_session("r1", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match="'maybe' is not one of"):
        store.record(s.id, "img1.png", "Cardiomegaly", "maybe", reviewer="AB")
    with pytest.raises(ReviewStoreError, match="does not exist"):
        store.record(12345, "img1.png", "Cardiomegaly", "agree", reviewer="AB")
    assert store.verdicts() == []


def test_concurrent_threads_all_land(store):
    s = store.create_session("threads", "ckpt", "val")

    def writer(worker: int) -> None:
        for i in range(25):
            store.record(
                s.id,
                f"img{worker}_{i}.png",
                "Edema",
                "agree",
                note=f"w{worker}",
                reviewer=f"R{worker}",
            )

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.verdicts(s.id)) == 150


_WRITER = """
import sys
from cxr_core.artifacts.review_store import ReviewStore
folder, session_id, worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = ReviewStore(folder)
for i in range(20):
    store.record(session_id, f"p{worker}_{i}.png", "Mass", "model_wrong", reviewer=f"R{worker}")
    store.save_position(session_id, i, reviewer=f"R{worker}", image_id=f"p{worker}_{i}.png")
"""


def test_concurrent_processes_all_land(store):
    """Separate OS processes (as several dashboard servers would be) writing to one database."""
    s = store.create_session("procs", "ckpt", "val")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, store.target, str(s.id), str(w)],
            stderr=subprocess.PIPE,
        )
        for w in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert {v.image_id for v in store.verdicts(s.id)} == {
        f"p{w}_{i}.png" for w in range(3) for i in range(20)
    }


def test_export_csv_round_trip(store, tmp_path):
    s = store.create_session("export", "ckpt", "val")
    t = store.create_session("other", "ckpt", "test")
    store.record(s.id, "a.png", "Edema", "agree", note='comma, "quote"\nnewline', reviewer="AB")
    store.record(s.id, "b.png", "Mass", "model_wrong", reviewer="AB")
    store.record(t.id, "c.png", "Mass", "unsure", reviewer="CD")
    out = tmp_path / "out" / "verdicts.csv"
    assert store.export_csv(out, s.id) == 2
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    assert [(r["image_id"], r["class_name"], r["verdict"]) for r in rows] == [
        ("a.png", "Edema", "agree"),
        ("b.png", "Mass", "model_wrong"),
    ]
    assert rows[0]["note"] == 'comma, "quote"\nnewline'
    assert rows[0]["session_name"] == "export" and rows[0]["eval_run"] == "val"
    assert store.export_csv(tmp_path / "all.csv") == 3


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ReviewStoreError, match="CXR_REVIEW_DIR"):
        ReviewStore(blocker / "sub")


# --------------------------------------------------------------------------- readers, history


def test_record_refuses_an_empty_reviewer(store):
    s = store.create_session("r1", "ckpt", "val")
    for nobody in ("", "   ", None):
        with pytest.raises(ReviewStoreError, match="reader's name"):
            store.record(s.id, "img1.png", "Edema", "agree", reviewer=nobody)
    assert store.verdicts() == [] and store.history(s.id) == []


def test_readers_never_overwrite_each_other_and_history_keeps_every_change(store):
    s = store.create_session("team", "ckpt", "val", mode="blind_all", classes=["Edema", "Mass"])
    assert (s.mode, s.classes) == ("blind_all", ("Edema", "Mass"))
    store.record(s.id, "img1.png", "Edema", "model_wrong", reviewer="A")
    store.record(s.id, "img1.png", "Edema", "unsure", reviewer="CD")
    assert store.verdict(s.id, "img1.png", "Edema", "A").verdict == "model_wrong"
    assert store.verdict(s.id, "img1.png", "Edema", "CD").verdict == "unsure"
    store.record(
        s.id,
        "img1.png",
        "Edema",
        reviewer="A",
        finding="present",
        confidence=4,
        reason="subtle finding",
        note="left base",
        point=(0.25, 0.75),
    )
    mine = store.verdict(s.id, "img1.png", "Edema", "A")
    assert (mine.finding, mine.verdict, mine.confidence, mine.reason, mine.point) == (
        "present",
        None,
        4,
        "subtle finding",
        (0.25, 0.75),
    )
    assert store.readers(s.id) == ["A", "CD"]
    assert len(store.verdicts(s.id)) == 2 and len(store.verdicts(s.id, reviewer="A")) == 1
    assert [v.verdict for v in store.history(s.id, "img1.png", "Edema", "A")] == [
        "model_wrong",
        None,
    ]
    assert len(store.history(s.id)) == 3
    rows = store.export_rows(s.id)
    assert [(r["reviewer"], r["verdict"], r["finding"], r["mode"]) for r in rows] == [
        ("A", None, "present", "blind_all"),
        ("CD", "unsure", None, "blind_all"),
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "reader's call"),
        ({"finding": "maybe"}, "finding 'maybe'"),
        ({"finding": "present", "confidence": 6}, "confidence"),
        ({"finding": "present", "confidence": True}, "confidence"),
        ({"finding": "present", "reason": "hunch"}, "reason 'hunch'"),
        ({"finding": "present", "point": (1.5, 0.2)}, "outside the image"),
        ({"finding": "present", "point": "here"}, "fractions"),
    ],
)
def test_bad_verdict_fields_are_refused(store, kwargs, match):
    s = store.create_session("r1", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match=match):
        store.record(s.id, "img1.png", "Edema", reviewer="AB", **kwargs)
    with pytest.raises(ReviewStoreError, match="reading mode"):
        store.create_session("r2", "ckpt", "val", mode="double-blind")


def test_positions_are_per_reader(store):
    s = store.create_session("team", "ckpt", "val")
    assert store.reader_position(s.id, "A") is None
    store.save_position(s.id, 3, reviewer="A", image_id="img3.png")
    store.save_position(s.id, 7, reviewer="B", image_id="img7.png")
    store.update_filters(s.id, {"outcomes": ["FP"]})
    assert store.reader_position(s.id, "A") == (3, "img3.png")
    assert store.reader_position(s.id, "B") == (7, "img7.png")


def test_adjudication_latest_entry_counts(store):
    s = store.create_session("team", "ckpt", "val")
    store.adjudicate(s.id, "img1.png", "Edema", 1, "ADJ")
    store.adjudicate(s.id, "img1.png", "Edema", 0, "ADJ", note="second look")
    store.adjudicate(s.id, "img2.png", "Edema", 1, "ADJ")
    assert [(a.image_id, a.label, a.note) for a in store.adjudications(s.id)] == [
        ("img1.png", 0, "second look"),
        ("img2.png", 1, ""),
    ]
    with pytest.raises(ReviewStoreError, match="1 \\(present\\) or 0"):
        store.adjudicate(s.id, "img1.png", "Edema", 2, "ADJ")
    with pytest.raises(ReviewStoreError, match="reader's name"):
        store.adjudicate(s.id, "img1.png", "Edema", 1, " ")


def test_export_is_formula_safe(store, tmp_path):
    s = store.create_session("export", "ckpt", "val")
    store.record(s.id, '=HYPERLINK("x")', "Edema", "agree", note="+1 -2 @x", reviewer="=cmd|")
    store.record(s.id, "b.png", "Edema", "agree", note="\tTabbed\r\nlines", reviewer="AB")
    out = tmp_path / "v.csv"
    store.export_csv(out, s.id)
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["image_id"] == '\'=HYPERLINK("x")' and rows[0]["reviewer"] == "'=cmd|"
    assert rows[0]["note"] == "'+1 -2 @x"
    assert rows[1]["note"] == "'\tTabbed\r\nlines"


def test_a_locked_database_is_a_review_store_error(tmp_path):
    store = ReviewStore(tmp_path / "reviews")
    s = store.create_session("lock", "ckpt", "val")
    quick = ReviewStore(store.folder, timeout_s=0.2)
    blocker = sqlite3.connect(store.path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(ReviewStoreError, match="locked"):
            quick.record(s.id, "img1.png", "Edema", "agree", reviewer="AB")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    quick.record(s.id, "img1.png", "Edema", "agree", reviewer="AB")


# --------------------------------------------------------------------------- migration


def test_old_database_migrates_in_place_with_no_verdict_lost(tmp_path):
    folder = tmp_path / "old"
    old_database(folder)
    store = ReviewStore(folder)
    assert store.schema_version() == SCHEMA_VERSION == 6
    first = store.session(1)
    assert (first.name, first.position, first.mode, first.classes) == (
        "AB 2024-05-01",
        4,
        "unblinded",
        (),
    )
    assert first.filters["class"] == "Edema"
    got = [
        (v.session_id, v.image_id, v.class_name, v.verdict, v.note, v.reviewer, v.updated)
        for v in store.verdicts()
    ]
    assert got == [
        (
            1,
            "00000001_000.png",
            "Edema",
            "model_wrong",
            "no edema",
            "A",
            "2026-12-01T20:09:59.001+00:00",
        ),
        (
            1,
            "00000002_000.png",
            "Edema",
            "agree",
            "",
            LEGACY_READER,
            "2026-12-01T20:10:30.000+00:00",
        ),
        (
            2,
            "00000003_000.png",
            "Mass",
            "label_wrong",
            "mass RUL",
            "CD",
            "2026-12-01T20:11:00.000+00:00",
        ),
    ]
    assert len(store.history(1)) == 2  # the old verdicts start the history
    assert [v.reviewer for v in store.history(1)] == ["A", LEGACY_READER]
    assert store.readers(1) == ["A", LEGACY_READER]
    assert [r["reviewer"] for r in store.export_rows(1)] == ["A", LEGACY_READER]
    # a second reader can now add their own verdict to a migrated case without replacing A's
    store.record(1, "00000001_000.png", "Edema", "unsure", reviewer="CD")
    assert {
        v.reviewer: v.verdict for v in store.verdicts(1) if v.image_id == "00000001_000.png"
    } == {"A": "model_wrong", "CD": "unsure"}
    with pytest.raises(
        ReviewStoreError, match="before readers were named"
    ):  # nobody can change them
        store.record(
            1, "00000002_000.png", "Edema", "model_wrong", reviewer=" Unnamed (before  readers) "
        )
    again = ReviewStore(folder)  # opening a migrated file again changes nothing
    assert len(again.verdicts()) == 4 and again.schema_version() == SCHEMA_VERSION


def test_migration_by_two_processes_at_once_loses_nothing(tmp_path):
    folder = tmp_path / "old"
    old_database(folder)
    code = "import sys; from cxr_core.artifacts.review_store import ReviewStore; ReviewStore(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(folder)], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert len(ReviewStore(folder).verdicts()) == 3


def test_schema_2_database_migrates_to_boxes_and_names_its_unnamed_verdicts(tmp_path):
    """A file written by schema 2 (after it had migrated a single-reader file): nothing lost, boxes now stored."""
    folder = tmp_path / "v2"
    old_database(folder, V2_ROWS, V2_SCHEMA)
    store = ReviewStore(folder)
    assert store.schema_version() == SCHEMA_VERSION
    by_reader = {v.reviewer: v for v in store.verdicts(1)}
    assert set(by_reader) == {LEGACY_READER, "CD"}
    assert (by_reader[LEGACY_READER].verdict, by_reader[LEGACY_READER].updated) == (
        "agree",
        "2026-12-01T20:10:30.000+00:00",
    )
    cd = by_reader["CD"]
    assert (cd.finding, cd.confidence, cd.reason, cd.note, cd.point, cd.box) == (
        "absent",
        4,
        "subtle finding",
        "clear bases",
        (0.25, 0.75),
        None,
    )
    assert [v.reviewer for v in store.history(1)] == [LEGACY_READER, "CD"]
    assert store.reader_position(1, "CD") == (1, "00000002_000.png")
    assert [(a.label, a.adjudicator) for a in store.adjudications(1)] == [(0, "ADJ")]
    store.record(
        1, "00000002_000.png", "Edema", reviewer="CD", finding="present", box=(0.6, 0.5, 0.2, 0.1)
    )
    assert store.verdict(1, "00000002_000.png", "Edema", "CD").box == (0.2, 0.1, 0.6, 0.5)
    assert [v.box for v in store.history(1, reviewer="CD")] == [None, (0.2, 0.1, 0.6, 0.5)]
    assert len(store.verdicts(1)) == 2


def test_box_round_trip_export_and_validation(store, tmp_path):
    s = store.create_session("boxes", "ckpt", "val")
    store.record(s.id, "a.png", "Mass", reviewer="AB", finding="present", box=(0.1, 0.2, 0.4, 0.5))
    store.record(s.id, "b.png", "Mass", reviewer="AB", finding="present", point=(0.3, 0.6))
    assert store.verdict(s.id, "a.png", "Mass", "AB").box == (0.1, 0.2, 0.4, 0.5)
    assert store.verdict(s.id, "b.png", "Mass", "AB").box is None
    out = tmp_path / "boxes.csv"
    store.export_csv(out, s.id)
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"]) for r in rows] == [
        ("0.1", "0.2", "0.4", "0.5"),
        ("", "", "", ""),
    ]
    assert (rows[1]["point_x"], rows[1]["point_y"]) == ("0.3", "0.6")
    for bad, match in (
        ((0.1, 0.2, 0.1, 0.5), "no area"),
        ((0.1, 0.2, 1.4, 0.5), "outside the image"),
        ((0.1, 0.2, 0.3), "fractions"),
        ("box", "fractions"),
    ):
        with pytest.raises(ReviewStoreError, match=match):
            store.record(s.id, "c.png", "Mass", reviewer="AB", finding="present", box=bad)
    assert store.verdict(s.id, "c.png", "Mass", "AB") is None


def test_the_legacy_reader_name_is_reserved(store):
    s = store.create_session("r1", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match="enter your own name"):
        store.record(s.id, "img1.png", "Edema", "agree", reviewer=LEGACY_READER)
    with pytest.raises(ReviewStoreError, match="enter your own name"):
        store.adjudicate(s.id, "img1.png", "Edema", 1, LEGACY_READER.upper())


def _rows(path, table: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
    finally:
        conn.close()


def test_schema_3_database_migrates_to_reveals_keeping_every_row(tmp_path):
    """A file written by schema 3: every verdict, history entry, position and adjudication is there, unchanged."""
    folder = tmp_path / "v3"
    path = old_database(folder, V3_ROWS, V3_SCHEMA)
    before = {
        t: _rows(path, t)
        for t in ("sessions", "verdicts", "verdict_history", "reader_positions", "adjudications")
    }
    assert len(before["verdicts"]) == 5 and len(before["verdict_history"]) == 6
    store = ReviewStore(folder)
    assert store.schema_version() == SCHEMA_VERSION
    assert {t: _rows(path, t) for t in before} == before
    assert _rows(path, "reveals") == []
    ab = {v.class_name: v for v in store.verdicts(1, reviewer="AB")}
    assert (ab["Edema"].finding, ab["Edema"].confidence, ab["Edema"].note, ab["Edema"].point) == (
        "present",
        5,
        "bat wings",
        (0.4, 0.6),
    )
    assert store.verdict(1, "b.png", "Mass", "CD").box == (0.6, 0.1, 0.8, 0.3)
    assert [v.finding for v in store.history(1, "a.png", "Edema", "AB")] == ["absent", "present"]
    assert store.readers(2) == [LEGACY_READER]
    assert store.reader_position(1, "AB") == (1, "b.png")
    assert [(a.label, a.note) for a in store.adjudications(1)] == [(0, "on reflection")]
    assert store.session(1).mode == "blind_all" and store.revealed_at(1, "AB") is None
    # the migrated blinded session works as before: new calls, then a reveal
    store.record(1, "b.png", "Edema", reviewer="AB", finding="absent")
    store.reveal(1, "AB")
    with pytest.raises(ReviewStoreError, match="would not be blinded"):
        store.record(1, "b.png", "Mass", reviewer="AB", finding="absent")
    assert ReviewStore(folder).schema_version() == SCHEMA_VERSION and len(store.verdicts()) == 6


def test_reveal_is_recorded_per_reader_and_persists(store, tmp_path):
    s = store.create_session("blind", "ckpt", "val", mode="blind_labels")
    assert store.revealed_at(s.id, "AB") is None
    first = store.reveal(s.id, " AB ")
    assert store.revealed_at(s.id, "AB") == first and first.endswith("+00:00")
    assert store.reveal(s.id, "AB") == first  # the first reveal is the one kept
    assert store.revealed_at(s.id, "CD") is None  # other readers stay blinded
    assert (
        ReviewStore(store.target).revealed_at(s.id, "AB") == first
    )  # in the database, not in memory
    other = store.create_session("blind 2", "ckpt", "val", mode="blind_all")
    assert store.revealed_at(other.id, "AB") is None  # per session too
    with pytest.raises(ReviewStoreError, match="enter your own name"):
        store.reveal(s.id, LEGACY_READER)
    with pytest.raises(ReviewStoreError, match="does not exist"):
        store.reveal(999, "AB")


def test_after_a_reveal_new_calls_are_refused_and_earlier_ones_can_change(store):
    s = store.create_session("blind", "ckpt", "val", mode="blind_all", classes=["Edema", "Mass"])
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="present")
    when = store.reveal(s.id, "AB")
    shown = when[:19].replace("T", " ") + " UTC"
    for image_id, class_name in (
        ("b.png", "Edema"),
        ("a.png", "Mass"),
    ):  # a film not read, a finding not called
        with pytest.raises(
            ReviewStoreError,
            match=f"you revealed the labels and model output of this session at "
            f"{shown}; calls you save now would not be blinded",
        ):
            store.record(s.id, image_id, class_name, reviewer="AB", finding="absent")
    assert [(v.image_id, v.class_name) for v in store.verdicts(s.id)] == [("a.png", "Edema")]
    assert len(store.history(s.id)) == 1  # a refused call leaves no trace
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="absent", note="on reflection")
    assert [v.finding for v in store.history(s.id, "a.png", "Edema", "AB")] == ["present", "absent"]
    store.record(
        s.id, "b.png", "Edema", reviewer="CD", finding="present"
    )  # another reader is still blinded
    store.adjudicate(s.id, "a.png", "Edema", 1, "AB")  # deciding is what a reveal is for


def test_unblinded_sessions_have_nothing_to_reveal(store):
    s = store.create_session("open", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match="unblinded"):
        store.reveal(s.id, "AB")
    assert store.revealed_at(s.id, "AB") is None
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="present")
    assert store.verdict(s.id, "a.png", "Edema", "AB").finding == "present"


# --------------------------------------------------------------------------- drafts


def test_schema_4_database_migrates_to_drafts_keeping_every_row(tmp_path):
    """A file written by schema 4: every row of every table is there, unchanged, and drafts, users
    and the audit log start empty."""
    folder = tmp_path / "v4"
    path = old_database(folder, V4_ROWS, V4_SCHEMA)
    tables = (
        "sessions",
        "verdicts",
        "verdict_history",
        "reader_positions",
        "adjudications",
        "reveals",
    )
    before = {t: _rows(path, t) for t in tables}
    assert [len(before[t]) for t in tables] == [1, 3, 4, 2, 1, 1]
    store = ReviewStore(folder)
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert {t: _rows(path, t) for t in tables} == before
    assert _rows(path, "drafts") == _rows(path, "users") == _rows(path, "audit_log") == []
    assert store.revealed_at(1, "CD") == "2027-02-01T09:30:00.000+00:00"
    assert [v.finding for v in store.history(1, "a.png", "Edema", "AB")] == ["unsure", "present"]
    # the migrated session takes drafts; saving turns them into verdicts next to the old ones
    store.save_draft(1, "b.png", "AB", Call("Edema", finding="present", point=(0.5, 0.5)))
    assert [(d.image_id, d.finding, d.point) for d in store.drafts(1, "AB")] == [
        ("b.png", "present", (0.5, 0.5))
    ]
    store.save_film(1, "b.png", "AB", [Call("Edema", finding="present", verdict="agree")])
    assert store.drafts(1, "AB") == [] and len(store.verdicts(1)) == 4
    assert ReviewStore(folder).schema_version() == SCHEMA_VERSION


def test_drafts_are_private_to_their_reader_and_never_verdicts(store, tmp_path):
    s = store.create_session("two readers", "ckpt", "val", classes=["Edema", "Mass"])
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="absent", note="clear")
    store.save_draft(s.id, "a.png", "AB", Call("Edema", finding="present", confidence=4))
    store.save_draft(
        s.id, "a.png", " CD ", Call("Mass", finding="unsure", box=(0.8, 0.7, 0.2, 0.1))
    )
    store.save_draft(s.id, "b.png", "AB", Call("Mass", note="look again"))  # a note, no call yet
    mine = store.drafts(s.id, "AB")
    assert [(d.image_id, d.class_name, d.finding) for d in mine] == [
        ("a.png", "Edema", "present"),
        ("b.png", "Mass", None),
    ]
    assert [d.box for d in store.drafts(s.id, "CD")] == [(0.2, 0.1, 0.8, 0.7)]
    assert store.drafts(s.id, "AB", image_id="b.png")[0].note == "look again"
    # nothing that counts verdicts sees a draft
    assert [(v.reviewer, v.finding) for v in store.verdicts(s.id)] == [("AB", "absent")]
    assert [r["finding"] for r in store.export_rows(s.id)] == ["absent"]
    assert store.readers(s.id) == ["AB"] and len(store.history(s.id)) == 1
    # a later draft of the same finding replaces the earlier one; drafts survive reopening the file
    store.save_draft(s.id, "a.png", "AB", Call("Edema", finding="unsure"))
    again = ReviewStore(store.target)
    assert [(d.class_name, d.finding, d.confidence) for d in again.drafts(s.id, "AB", "a.png")] == [
        ("Edema", "unsure", None)
    ]
    # saving a film discards the saved findings' drafts of that reader only
    again.save_film(s.id, "a.png", "AB", [Call("Edema", finding="unsure", verdict="unsure")])
    assert again.drafts(s.id, "AB", "a.png") == [] and len(again.drafts(s.id, "CD")) == 1
    assert again.verdict(s.id, "a.png", "Edema", "AB").finding == "unsure"
    again.discard_draft(s.id, "b.png", "Mass", "AB")
    assert again.drafts(s.id, "AB") == []


@pytest.mark.parametrize(
    "call, match",
    [
        (Call("Edema", finding="maybe"), "not one of"),
        (Call("Edema", confidence=7), "confidence"),
        (Call("Edema", point=(1.5, 0.2)), "outside the image"),
        (Call("Edema", box=(0.2, 0.2, 0.2, 0.6)), "no area"),
        (Call("", finding="present"), "class name"),
    ],
)
def test_bad_drafts_are_refused(store, call, match):
    s = store.create_session("s", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match=match):
        store.save_draft(s.id, "a.png", "AB", call)
    assert store.drafts(s.id, "AB") == []


def test_drafts_need_a_reader_and_a_session(store):
    s = store.create_session("s", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match="reader's name"):
        store.save_draft(s.id, "a.png", " ", Call("Edema", finding="present"))
    with pytest.raises(ReviewStoreError, match="does not exist"):
        store.save_draft(999, "a.png", "AB", Call("Edema", finding="present"))


def test_saving_a_film_is_all_or_nothing(store):
    """A call the store refuses (here: new after a reveal) leaves every call of the film and its drafts as they were."""
    s = store.create_session("blind", "ckpt", "val", mode="blind_all", classes=["Edema", "Mass"])
    store.record(s.id, "a.png", "Edema", reviewer="AB", finding="present")
    store.reveal(s.id, "AB")
    for call in (Call("Edema", finding="absent"), Call("Mass", finding="absent")):
        store.save_draft(s.id, "a.png", "AB", call)
    with pytest.raises(ReviewStoreError, match="would not be blinded"):
        store.save_film(
            s.id,
            "a.png",
            "AB",
            [Call("Edema", finding="absent"), Call("Mass", finding="absent")],
        )
    assert [(v.class_name, v.finding) for v in store.verdicts(s.id)] == [("Edema", "present")]
    assert len(store.history(s.id)) == 1 and len(store.drafts(s.id, "AB")) == 2
    with pytest.raises(ReviewStoreError, match="not one of"):  # checked before anything is written
        store.save_film(s.id, "a.png", "AB", [Call("Edema", finding="absent"), Call("Mass", "x")])
    assert len(store.history(s.id)) == 1


def test_schema_5_database_migrates_to_users_and_audit_keeping_every_row(tmp_path):
    """A file written by schema 5 (drafts, no users): every row stays, users and the audit log are
    added empty, the audit log refuses changes, and the migrated store checks roles at once."""
    folder = tmp_path / "v5"
    path = old_database(folder, V5_ROWS, V5_SCHEMA)
    tables = ("sessions", "verdicts", "verdict_history", "reader_positions", "adjudications")
    before = {t: _rows(path, t) for t in (*tables, "reveals", "drafts")}
    assert len(before["drafts"]) == 2
    store = ReviewStore(folder)
    assert store.schema_version() == SCHEMA_VERSION == 6
    assert {t: _rows(path, t) for t in (*tables, "reveals", "drafts")} == before
    assert _rows(path, "users") == _rows(path, "audit_log") == []
    assert [d.note for d in store.drafts(1, "CD")] == ["look again"]
    admin = Actor("root", "admin", "password")
    store.users.add(admin, "cd", "reader")
    cd = store.acting(store.users.actor_for("cd", "password"))
    with pytest.raises(AccessDeniedError, match="not as AB"):
        cd.drafts(1, "AB")
    with pytest.raises(AccessDeniedError, match="needs the role adjudicator"):
        cd.adjudicate(1, "a.png", "Edema", 0, "cd")
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_log")
    finally:
        conn.close()
    assert [e.action for e in store.audit.entries()] == ["user_added"]
    assert ReviewStore(folder).schema_version() == 6


# --------------------------------------------------------------------------- PostgreSQL


def test_a_locked_postgres_database_is_a_review_store_error(postgres_db):
    """A writer holding the store's write lock past the timeout: a clear error, nothing saved."""
    import psycopg

    store = ReviewStore(postgres_db)
    s = store.create_session("lock", "ckpt", "val")
    quick = ReviewStore(postgres_db, timeout_s=0.2)
    with psycopg.connect(postgres_db) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(hashtext('cxr-store-writes'))")
        with pytest.raises(ReviewStoreError, match="locked"):
            quick.record(s.id, "img1.png", "Edema", "agree", reviewer="AB")
    assert store.verdicts(s.id) == []
    quick.record(s.id, "img1.png", "Edema", "agree", reviewer="AB")
    assert len(store.verdicts(s.id)) == 1


def test_an_unreachable_postgres_server_is_a_review_store_error():
    with pytest.raises(ReviewStoreError, match="CXR_REVIEW_DB") as caught:
        ReviewStore("postgresql://reader:secret@127.0.0.1:1/reviews", timeout_s=1)
    assert "secret" not in str(caught.value)  # the password never reaches a message


def test_postgres_url_from_the_environment(postgres_db, monkeypatch):
    monkeypatch.setenv("CXR_REVIEW_DB", postgres_db)
    store = ReviewStore()
    assert store.folder is None and store.target == postgres_db
    assert store.schema_version() == SCHEMA_VERSION


def test_an_older_postgres_schema_migrates_keeping_every_row(postgres_db):
    """A database left at schema 3 (no reveals table) is brought to the current schema on open,
    once, by two stores opening it at the same time, with every verdict kept."""
    import psycopg

    store = ReviewStore(postgres_db)
    s = store.create_session("old", "ckpt", "val", mode="blind_labels")
    for i in range(5):
        store.record(s.id, f"{i}.png", "Edema", reviewer="AB", finding="present", box=(0, 0, 1, 1))
    with psycopg.connect(postgres_db) as conn:
        conn.execute("DROP TABLE reveals")
        conn.execute("UPDATE cxr_schema SET version = 3 WHERE store = 'review'")
    threads = [threading.Thread(target=ReviewStore, args=(postgres_db,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reopened = ReviewStore(postgres_db)
    assert reopened.schema_version() == SCHEMA_VERSION
    assert len(reopened.verdicts(s.id)) == 5 and reopened.verdicts(s.id)[0].box == (0, 0, 1, 1)
    assert reopened.reveal(s.id, "AB")


def test_postgres_connections_cut_by_the_server_cost_one_call_at_most(postgres_db):
    """Kept connections the server ended (a restart, an idle timeout): one call may fail with a
    clear error, and the next ones open new connections."""
    import psycopg

    store = ReviewStore(postgres_db)
    s = store.create_session("cut", "ckpt", "val")
    store.record(s.id, "a.png", "Edema", "agree", reviewer="AB")  # leaves a kept connection
    with psycopg.connect(postgres_db, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    failures = 0
    for i in range(3):
        try:
            store.record(s.id, f"{i}.png", "Edema", "agree", reviewer="AB")
        except ReviewStoreError:
            failures += 1
    assert failures <= 1 and len(store.verdicts(s.id)) == 4 - failures
