"""Review verdicts in SQLite: upserts, concurrent writers, reopen, CSV export, validation."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading

import pytest

from cxr_core.artifacts.review_store import (
    EXPORT_COLUMNS,
    ReviewStore,
    ReviewStoreError,
)


@pytest.fixture
def store(tmp_path):
    return ReviewStore(tmp_path / "reviews")


def test_default_folder_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "env_dir"))
    store = ReviewStore()
    assert store.path == tmp_path / "env_dir" / "review.sqlite3"
    assert store.path.is_file()


def test_session_round_trip_and_position(store):
    s = store.create_session("AB 2024-05-01", "nih_small", "val", {"class": "Cardiomegaly", "outcome": "FP"})
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
    store.record(s.id, "img1.png", "Cardiomegaly", "agree", note="clear")
    store.record(s.id, "img1.png", "Cardiomegaly", "label_wrong", note="label missed it", reviewer="AB")
    store.record(s.id, "img1.png", "Pneumonia", "unsure")
    reopened = ReviewStore(tmp_path / "reviews")
    v = reopened.verdict(s.id, "img1.png", "Cardiomegaly")
    assert (v.verdict, v.note, v.reviewer) == ("label_wrong", "label missed it", "AB")
    assert len(reopened.verdicts(s.id)) == 2
    assert reopened.session(s.id).name == "r1"
    assert reopened.verdict(s.id, "img2.png", "Cardiomegaly") is None


def test_invalid_verdict_and_unknown_session_rejected(store):
    s = store.create_session("r1", "ckpt", "val")
    with pytest.raises(ReviewStoreError, match="'maybe' is not one of"):
        store.record(s.id, "img1.png", "Cardiomegaly", "maybe")
    with pytest.raises(ReviewStoreError, match="does not exist"):
        store.record(12345, "img1.png", "Cardiomegaly", "agree")
    assert store.verdicts() == []


def test_concurrent_threads_all_land(store):
    s = store.create_session("threads", "ckpt", "val")

    def writer(worker: int) -> None:
        for i in range(25):
            store.record(s.id, f"img{worker}_{i}.png", "Edema", "agree", note=f"w{worker}")

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
    store.record(session_id, f"p{worker}_{i}.png", "Mass", "model_wrong")
    store.save_position(session_id, i)
"""


def test_concurrent_processes_all_land(store):
    """Separate OS processes (as several dashboard servers would be) writing to one database."""
    s = store.create_session("procs", "ckpt", "val")
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(store.folder), str(s.id), str(w)], stderr=subprocess.PIPE)
        for w in range(3)
    ]
    errors = [p.communicate(timeout=120)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert {v.image_id for v in store.verdicts(s.id)} == {f"p{w}_{i}.png" for w in range(3) for i in range(20)}


def test_export_csv_round_trip(store, tmp_path):
    s = store.create_session("export", "ckpt", "val")
    t = store.create_session("other", "ckpt", "test")
    store.record(s.id, "a.png", "Edema", "agree", note='comma, "quote"\nnewline', reviewer="AB")
    store.record(s.id, "b.png", "Mass", "model_wrong")
    store.record(t.id, "c.png", "Mass", "unsure")
    out = tmp_path / "out" / "verdicts.csv"
    assert store.export_csv(out, s.id) == 2
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(EXPORT_COLUMNS)
    assert [(r["image_id"], r["class_name"], r["verdict"]) for r in rows] == [("a.png", "Edema", "agree"), ("b.png", "Mass", "model_wrong")]
    assert rows[0]["note"] == 'comma, "quote"\nnewline'
    assert rows[0]["session_name"] == "export" and rows[0]["eval_run"] == "val"
    assert store.export_csv(tmp_path / "all.csv") == 3


def test_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ReviewStoreError, match="CXR_REVIEW_DIR"):
        ReviewStore(blocker / "sub")
