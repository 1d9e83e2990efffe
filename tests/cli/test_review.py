"""``cxr review export`` and ``cxr review agreement`` on a real checkpoint directory and review database."""

from __future__ import annotations

import csv

import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.cli.main import main
from cxr_core.evaluation.review import SESSION_EXPORT_COLUMNS
from tests.checkpoint_fixtures import build_checkpoint_dir


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint_dir(tmp_path_factory.mktemp("cli_review") / "checkpoints", "tiny", seed=4, n_cases=30)


@pytest.fixture
def db(tmp_path, checkpoint):
    store = ReviewStore(tmp_path / "db")
    frame = pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")
    images = frame["image_id"].astype(str).tolist()[:12]
    cls = [c.split(":", 1)[1] for c in frame.columns if c.startswith("prob:")][0]
    s = store.create_session("two readers", str(checkpoint), "val", mode="blind_labels", classes=[cls])
    a = ["present" if i % 2 else "absent" for i in range(12)]
    b = ["present" if i % 3 else "absent" for i in range(12)]
    for image_id, ca, cb in zip(images, a, b):
        store.record(s.id, image_id, cls, reviewer="AB", finding=ca)
        store.record(s.id, image_id, cls, reviewer="CD", finding=cb, note="=1+1")
    return store, s, cls, a, b


def test_export_writes_one_row_per_reader_verdict(db, tmp_path, capsys):
    store, s, cls, _, _ = db
    out = tmp_path / "out.csv"
    assert main(["review", "export", "--db", str(store.folder), "--session", str(s.id), "--out", str(out)]) == 0
    assert "wrote 24 verdict row(s)" in capsys.readouterr().out
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(SESSION_EXPORT_COLUMNS) and len(rows) == 24
    assert {r["reviewer"] for r in rows} == {"AB", "CD"}
    for row in rows:
        assert row["mode"] == "blind_labels" and row["class_name"] == cls
        assert 0.0 <= float(row["probability"]) <= 1.0 and float(row["threshold"]) > 0
        assert row["outcome"] in {"TP", "FP", "FN", "TN"} and row["ground_truth"] in {"present", "absent"}
        assert row["updated"]
    assert {r["note"] for r in rows if r["reviewer"] == "CD"} == {"'=1+1"}  # formula-safe
    all_out = tmp_path / "all.csv"
    assert main(["review", "export", "--db", str(store.folder), "--out", str(all_out)]) == 0


def test_agreement_table_matches_sklearn(db, tmp_path, capsys):
    store, s, cls, a, b = db
    table_csv = tmp_path / "kappa.csv"
    assert main(["review", "agreement", "--db", str(store.folder), "--session", str(s.id), "--bootstrap", "100",
                 "--csv", str(table_csv)]) == 0
    printed = capsys.readouterr().out
    assert "readers: AB, CD" in printed and "dataset label" in printed and "model" in printed
    table = pd.read_csv(table_csv)
    row = table[(table["rater_a"] == "AB") & (table["rater_b"] == "CD")].iloc[0]
    assert row["kappa"] == pytest.approx(cohen_kappa_score(a, b))
    assert row["n_items"] == 12


def test_unknown_session_is_a_clear_error(db, capsys):
    store, *_ = db
    assert main(["review", "agreement", "--db", str(store.folder), "--session", "99"]) != 0
    assert "does not exist" in capsys.readouterr().err
