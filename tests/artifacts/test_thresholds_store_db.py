"""Threshold sets kept in a database (PostgreSQL for several servers; a SQLite file runs the same
SQL), against the same behaviour as the files next to a checkpoint: round trips, every replaced
version kept, the default set and its log, refusals, and two stores (servers) seeing each other's
saves. Each test runs on ``files``, ``sqlite`` and ``postgres``."""

from __future__ import annotations

import threading

import pytest

from cxr_core.artifacts.thresholds_store import CARD_SET, ThresholdSetError, ThresholdStore

CLASSES = ("Atelectasis", "Cardiomegaly", "Pleural Effusion")
CARD = {"Atelectasis": 0.3, "Cardiomegaly": 0.4, "Pleural Effusion": 0.6}


@pytest.fixture(params=["files", "sqlite", "postgres"])
def place(request, tmp_path):
    """How to open the store of one checkpoint folder, as a second server would too."""
    db = {
        "files": None,
        "sqlite": str(tmp_path / "thresholds.sqlite3"),
        "postgres": request.getfixturevalue("postgres_db") if request.param == "postgres" else None,
    }[request.param]

    def open_store(server: int = 0) -> ThresholdStore:
        # servers on one database have the model in folders of their own (of the same name)
        folder = tmp_path / "nih14" if db is None else tmp_path / f"server{server}" / "nih14"
        return ThresholdStore(folder, CLASSES, CARD, db=db)

    return open_store


def test_round_trip_and_every_replaced_version_is_kept(place):
    store = place()
    store.save("triage", {"Atelectasis": 0.2, "Cardiomegaly": 0.5, "Pleural Effusion": 0.7})
    store.save("triage", dict.fromkeys(CLASSES, 0.8), method="sensitivity=0.9", notes="ward")
    loaded = store.load("triage")
    assert loaded.thresholds == dict.fromkeys(CLASSES, 0.8)
    assert (loaded.method, loaded.notes) == ("sensitivity=0.9", "ward")
    assert [v.thresholds["Atelectasis"] for v in store.versions("triage")] == [0.2]
    assert store.names() == [CARD_SET, "triage"]
    with pytest.raises(ThresholdSetError, match="no threshold set named 'nope'"):
        store.load("nope")
    with pytest.raises(ThresholdSetError, match="reserved"):
        store.save("card", dict.fromkeys(CLASSES, 0.5))


def test_concurrent_saves_keep_every_version(place):
    store = place()

    def writer(value: float) -> None:
        for _ in range(5):
            store.save("shared", dict.fromkeys(CLASSES, value))

    threads = [threading.Thread(target=writer, args=(v,)) for v in (0.1, 0.2, 0.3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = [v.thresholds["Cardiomegaly"] for v in store.versions("shared")]
    assert (
        sorted(kept + [store.load("shared").thresholds["Cardiomegaly"]])
        == [0.1] * 5 + [0.2] * 5 + [0.3] * 5
    )


def test_default_set_and_its_log_are_shared_by_two_servers(place):
    first, second = place(), place()
    first.save("screening", dict.fromkeys(CLASSES, 0.1))
    assert second.names() == [CARD_SET, "screening"]
    entry = second.set_active("screening", by="  Dr  A ")
    assert (entry["by"], entry["from"], entry["to"]) == ("Dr A", CARD_SET, "screening")
    assert first.active_name() == "screening"
    assert first.active().thresholds == dict.fromkeys(CLASSES, 0.1)
    first.set_active(CARD_SET, by="CD")
    assert [(e["by"], e["from"], e["to"]) for e in second.activations()] == [
        ("Dr A", CARD_SET, "screening"),
        ("CD", "screening", CARD_SET),
    ]
    with pytest.raises(ThresholdSetError, match="no such threshold set"):
        first.set_active("missing", by="CD")
    assert len(second.activations()) == 2
    assert second.active().thresholds == CARD


def test_readers_choices_and_acknowledgements_are_shared_by_two_servers(place):
    """A reader's own set and what they have acknowledged follow them to another server."""
    first, second = place(0), place(1)
    first.save("mine", dict.fromkeys(CLASSES, 0.2))
    first.save("screening", dict.fromkeys(CLASSES, 0.1))
    assert second.reader_choice("B") is None and second.unseen_changes("B") == []
    first.choose(" B ", "mine")
    second.acknowledge("A")
    second.set_active("screening", by="A")
    second.acknowledge("A")  # the reader who made the change has seen it
    assert second.reader_choice("B").set_name == "mine"  # B's choice is untouched
    assert [(c["by"], c["to"]) for c in first.unseen_changes("B")] == [("A", "screening")]
    assert first.unseen_changes("A") == []
    assert first.reader_choice("C") is None  # first seen later: starts with the log acknowledged
    second.acknowledge("C")
    assert first.reader_choice("C").seen == 1 and first.unseen_changes("C") == []
    first.acknowledge("B")
    assert second.unseen_changes("B") == [] and second.reader_choice("B").set_name == "mine"
    second.choose("B", None)
    assert first.reader_choice("B").set_name == ""  # follows the default again
    with pytest.raises(ThresholdSetError, match="no threshold set named 'missing'"):
        first.choose("B", "missing")
    with pytest.raises(ThresholdSetError, match="reader name"):
        first.choose("   ", "mine")
    kept_in_files = (first.folder / "readers.json").exists()
    assert kept_in_files == (first._tables is None)


def test_reader_choices_written_concurrently_are_all_kept(place):
    store = place()
    store.save("mine", dict.fromkeys(CLASSES, 0.2))
    threads = [
        threading.Thread(target=place(i % 2).choose, args=(f"reader {i}", "mine"))
        for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(store.reader_choice(f"reader {i}").set_name == "mine" for i in range(12))


def test_a_schema_1_database_gains_the_reader_table(tmp_path):
    """A threshold database written before readers' choices moved into it opens and keeps them."""
    import sqlite3

    from cxr_core.artifacts import thresholds_tables

    target = tmp_path / "thresholds.sqlite3"
    old = ThresholdStore(tmp_path / "nih14", CLASSES, CARD, db=str(target))
    old.save("ward", dict.fromkeys(CLASSES, 0.7))
    with sqlite3.connect(target) as conn:  # as schema 1 left it
        conn.execute("DROP TABLE threshold_readers")
        conn.execute("UPDATE cxr_schema SET version = 1 WHERE store = 'thresholds'")
    store = ThresholdStore(tmp_path / "nih14", CLASSES, CARD, db=str(target))
    store.choose("B", "ward")
    assert (
        ThresholdStore(tmp_path / "nih14", CLASSES, CARD, db=str(target))
        .reader_choice("B")
        .set_name
        == "ward"
    )
    with sqlite3.connect(target) as conn:
        version = conn.execute(
            "SELECT version FROM cxr_schema WHERE store = 'thresholds'"
        ).fetchone()[0]
    assert version == thresholds_tables.SCHEMA_VERSION == 2


def test_postgres_url_in_the_environment_keeps_sets_in_the_database(
    postgres_db, tmp_path, monkeypatch
):
    monkeypatch.setenv("CXR_REVIEW_DB", postgres_db)
    ThresholdStore(tmp_path / "a" / "nih14", CLASSES, CARD).save(
        "ward", dict.fromkeys(CLASSES, 0.7)
    )
    # another server, the same model in another folder of the same name
    other = ThresholdStore(tmp_path / "b" / "nih14", CLASSES, CARD)
    assert other.load("ward").thresholds == dict.fromkeys(CLASSES, 0.7)
    assert not (tmp_path / "a" / "nih14" / "thresholds").exists()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_threshold_sets_and_reviews_share_one_database(engine, request, tmp_path):
    """Each store keeps its own schema version, so both create their tables in one database."""
    from cxr_core.artifacts.review_store import SCHEMA_VERSION, ReviewStore

    target = request.getfixturevalue("postgres_db") if engine == "postgres" else None
    reviews = ReviewStore(target or tmp_path / "db")
    db = target or str(tmp_path / "db" / "review.sqlite3")
    store = ThresholdStore(tmp_path / "nih14", CLASSES, CARD, db=db)
    store.save("ward", dict.fromkeys(CLASSES, 0.7))
    again = ReviewStore(reviews.target)
    assert again.schema_version() == SCHEMA_VERSION and again.sessions() == []
    assert ThresholdStore(tmp_path / "nih14", CLASSES, CARD, db=db).names() == [CARD_SET, "ward"]
