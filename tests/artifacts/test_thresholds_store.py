"""Threshold sets: validation, atomic saves that never lose a previous version, active set."""

from __future__ import annotations

import json
import threading

import pytest

from cxr_core.artifacts.thresholds_store import (
    CARD_SET,
    ThresholdSetError,
    ThresholdStore,
)
from cxr_core.errors import UnknownClassError

CLASSES = ("Atelectasis", "Cardiomegaly", "Pleural Effusion")
CARD = {"Atelectasis": 0.3, "Cardiomegaly": 0.4, "Pleural Effusion": 0.6}


@pytest.fixture
def store(tmp_path):
    return ThresholdStore(tmp_path / "ckpt", CLASSES, CARD)


def test_card_set_is_active_by_default(store):
    assert store.names() == [CARD_SET]
    assert store.active_name() == CARD_SET
    assert store.active().thresholds == CARD


def test_save_load_round_trip_keeps_class_order(store, tmp_path):
    values = {"Pleural Effusion": 0.7, "Atelectasis": 0.25, "Cardiomegaly": 0.5}
    saved = store.save("screening", values, method="sensitivity", notes="sens >= 0.9")
    loaded = store.load("screening")
    assert loaded.thresholds == values
    assert list(loaded.thresholds) == list(CLASSES)
    assert (loaded.method, loaded.notes, loaded.created) == (
        "sensitivity",
        "sens >= 0.9",
        saved.created,
    )
    on_disk = json.loads((tmp_path / "ckpt" / "thresholds" / "screening.json").read_text())
    assert on_disk["thresholds"] == values
    assert store.names() == [CARD_SET, "screening"]


def test_overwrite_keeps_previous_version(store):
    store.save("triage", dict.fromkeys(CLASSES, 0.2))
    store.save("triage", dict.fromkeys(CLASSES, 0.8))
    store.save("triage", dict.fromkeys(CLASSES, 0.9))
    assert store.load("triage").thresholds == dict.fromkeys(CLASSES, 0.9)
    history = store.history("triage")
    assert [json.loads(p.read_text())["thresholds"]["Atelectasis"] for p in history] == [0.2, 0.8]
    assert store.names() == [CARD_SET, "triage"]  # history files are not sets


def test_no_temp_files_left_and_concurrent_saves_stay_valid(store, tmp_path):
    def writer(value: float) -> None:
        for _ in range(10):
            store.save("shared", dict.fromkeys(CLASSES, value))

    threads = [threading.Thread(target=writer, args=(v,)) for v in (0.1, 0.2, 0.3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.load("shared").thresholds["Cardiomegaly"] in (0.1, 0.2, 0.3)
    assert not list((tmp_path / "ckpt" / "thresholds").glob(".*.tmp"))
    versions = [
        json.loads(p.read_text())["thresholds"]["Cardiomegaly"] for p in store.history("shared")
    ]
    assert len(versions) == 29  # every overwritten version kept
    assert sorted(versions + [store.load("shared").thresholds["Cardiomegaly"]]) == sorted(
        [0.1, 0.2, 0.3] * 10
    )


def test_unknown_class_rejected(store):
    with pytest.raises(UnknownClassError, match="Pneumonia"):
        store.save("x", {**CARD, "Pneumonia": 0.5})


@pytest.mark.parametrize("value", [-0.01, 1.5, float("nan"), "high"])
def test_out_of_range_values_rejected(store, value):
    with pytest.raises(ThresholdSetError, match="Cardiomegaly"):
        store.save("x", {**CARD, "Cardiomegaly": value})


def test_missing_class_rejected(store):
    with pytest.raises(ThresholdSetError, match="Pleural Effusion"):
        store.save("x", {"Atelectasis": 0.5, "Cardiomegaly": 0.5})


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/b", "..", "", " ", "x.json", ".hidden", "card", "active", "a\\b", "x" * 65],
)
def test_unsafe_or_reserved_names_rejected(store, name, tmp_path):
    with pytest.raises(ThresholdSetError):
        store.save(name, CARD)
    assert not (tmp_path / "evil.json").exists()


def test_set_active_and_fallback(store, tmp_path):
    store.save("screening", dict.fromkeys(CLASSES, 0.1))
    store.set_active("screening")
    assert store.active_name() == "screening"
    assert store.active().thresholds == dict.fromkeys(CLASSES, 0.1)
    assert (tmp_path / "ckpt" / "thresholds" / "active.txt").read_text().strip() == "screening"
    # a fresh store object (another process) sees the same active set
    assert ThresholdStore(tmp_path / "ckpt", CLASSES, CARD).active_name() == "screening"
    (tmp_path / "ckpt" / "thresholds" / "screening.json").unlink()
    assert store.active_name() == CARD_SET
    with pytest.raises(ThresholdSetError, match="no such threshold set"):
        store.set_active("missing")
    store.set_active(CARD_SET)
    assert store.active().thresholds == CARD


def test_load_missing_or_corrupt(store, tmp_path):
    with pytest.raises(ThresholdSetError, match="no threshold set named 'nope'"):
        store.load("nope")
    folder = tmp_path / "ckpt" / "thresholds"
    folder.mkdir(parents=True)
    (folder / "broken.json").write_text("{not json")
    with pytest.raises(ThresholdSetError, match="unreadable"):
        store.load("broken")


def test_compare(store):
    store.save("a", {"Atelectasis": 0.2, "Cardiomegaly": 0.4, "Pleural Effusion": 0.5})
    frame = store.compare(CARD_SET, "a")
    assert list(frame["class"]) == list(CLASSES)
    assert frame["difference"].round(6).tolist() == [-0.1, 0.0, -0.1]
    assert list(frame.columns) == ["class", CARD_SET, "a", "difference"]


def test_activation_is_recorded_in_the_audit_log(store):
    store.save("screening", dict.fromkeys(CLASSES, 0.1))
    assert store.activations() == []
    first = store.set_active("screening", by="  Dr  A ")
    assert (first["by"], first["from"], first["to"]) == ("Dr A", CARD_SET, "screening")
    store.set_active(CARD_SET, by="CD")
    log = store.activations()
    assert [(e["by"], e["from"], e["to"]) for e in log] == [
        ("Dr A", CARD_SET, "screening"),
        ("CD", "screening", CARD_SET),
    ]
    assert log[0]["when"] <= log[1]["when"]
    with pytest.raises(ThresholdSetError):
        store.set_active("missing", by="CD")
    assert len(store.activations()) == 2  # a refused activation is not logged
    (store.folder / "activations.jsonl").open("a").write("not json\n")
    assert len(store.activations()) == 2


def test_readers_choices_are_one_file_and_a_damaged_one_is_forgotten(tmp_path):
    """Choices as files (their behaviour on every backend: test_thresholds_store_db.py): one JSON
    file holds every reader's choice, also when written at once; a damaged file forgets them."""
    store = ThresholdStore(tmp_path / "ckpt", CLASSES, CARD)
    store.save("mine", dict.fromkeys(CLASSES, 0.2))
    threads = [
        threading.Thread(target=store.choose, args=(f"reader {i}", "mine")) for i in range(12)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = json.loads((store.folder / "readers.json").read_text())
    assert sorted(data) == sorted(f"reader {i}" for i in range(12))
    (store.folder / "readers.json").write_text("{not json")
    assert store.reader_choice("reader 1") is None  # forgotten, never a crash
    assert store.choose("reader 1", "mine").set_name == "mine"
