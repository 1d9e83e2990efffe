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
    return build_checkpoint_dir(
        tmp_path_factory.mktemp("cli_review") / "checkpoints", "tiny", seed=4, n_cases=30
    )


@pytest.fixture
def db(tmp_path, checkpoint):
    store = ReviewStore(tmp_path / "db")
    frame = pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")
    images = frame["image_id"].astype(str).tolist()[:12]
    cls = [c.split(":", 1)[1] for c in frame.columns if c.startswith("prob:")][0]
    s = store.create_session(
        "two readers", str(checkpoint), "val", mode="blind_labels", classes=[cls]
    )
    a = ["present" if i % 2 else "absent" for i in range(12)]
    b = ["present" if i % 3 else "absent" for i in range(12)]
    for i, (image_id, ca, cb) in enumerate(zip(images, a, b)):
        store.record(
            s.id, image_id, cls, reviewer="AB", finding=ca, point=(0.25, 0.75) if i == 0 else None
        )
        store.record(
            s.id,
            image_id,
            cls,
            reviewer="CD",
            finding=cb,
            note="=1+1",
            box=(0.1, 0.2, 0.5, 0.6) if i == 0 else None,
        )
    return store, s, cls, a, b


def test_export_writes_one_row_per_reader_verdict(db, tmp_path, capsys):
    store, s, cls, _, _ = db
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "review",
                "export",
                "--db",
                str(store.folder),
                "--session",
                str(s.id),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "wrote 24 verdict row(s)" in capsys.readouterr().out
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(SESSION_EXPORT_COLUMNS) and len(rows) == 24
    assert {r["reviewer"] for r in rows} == {"AB", "CD"}
    for row in rows:
        assert row["mode"] == "blind_labels" and row["class_name"] == cls
        assert 0.0 <= float(row["probability"]) <= 1.0 and float(row["threshold"]) > 0
        assert row["outcome"] in {"TP", "FP", "FN", "TN"} and row["ground_truth"] in {
            "present",
            "absent",
        }
        assert row["updated"]
    assert {r["note"] for r in rows if r["reviewer"] == "CD"} == {"'=1+1"}  # formula-safe
    marked = {
        r["reviewer"]: r for r in rows if r["point_x"] or r["box_x0"]
    }  # "where" from the film, both kinds
    assert (marked["AB"]["point_x"], marked["AB"]["point_y"], marked["AB"]["box_x0"]) == (
        "0.25",
        "0.75",
        "",
    )
    assert [marked["CD"][c] for c in ("box_x0", "box_y0", "box_x1", "box_y1")] == [
        "0.1",
        "0.2",
        "0.5",
        "0.6",
    ]
    assert marked["AB"]["image_id"] == marked["CD"]["image_id"]
    all_out = tmp_path / "all.csv"
    assert main(["review", "export", "--db", str(store.folder), "--out", str(all_out)]) == 0


def test_agreement_table_matches_sklearn(db, tmp_path, capsys):
    store, s, cls, a, b = db
    table_csv = tmp_path / "kappa.csv"
    assert (
        main(
            [
                "review",
                "agreement",
                "--db",
                str(store.folder),
                "--session",
                str(s.id),
                "--bootstrap",
                "100",
                "--csv",
                str(table_csv),
            ]
        )
        == 0
    )
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


def test_agreement_says_why_a_kappa_is_undefined(tmp_path, checkpoint, capsys):
    store = ReviewStore(tmp_path / "db")
    frame = pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")
    images = frame["image_id"].astype(str).tolist()
    cls = [c.split(":", 1)[1] for c in frame.columns if c.startswith("prob:")][0]
    s = store.create_session("same calls", str(checkpoint), "val", mode="blind_all", classes=[cls])
    for image_id in images[:10]:  # both readers say "absent" on every film: chance agreement is 1
        store.record(s.id, image_id, cls, reviewer="AB", finding="absent")
        store.record(s.id, image_id, cls, reviewer="CD", finding="absent")
    store.record(
        s.id, images[10], cls, reviewer="EF", finding="present"
    )  # EF shares no film with AB or CD
    table_csv = tmp_path / "kappa.csv"
    assert (
        main(
            [
                "review",
                "agreement",
                "--db",
                str(store.folder),
                "--session",
                str(s.id),
                "--bootstrap",
                "20",
                "--csv",
                str(table_csv),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "undefined: every call the same" in printed
        and "not enough films (fewer than 10 shared)" in printed
    )
    assert "nan" not in printed.lower() and "None" not in printed
    table = pd.read_csv(table_csv, keep_default_na=False).set_index(["rater_a", "rater_b"])
    assert table.loc[("AB", "CD"), "undefined"] == "undefined: every call the same"
    assert table.loc[("AB", "EF"), "undefined"] == "not enough films (fewer than 10 shared)"
    assert (
        table.loc[("AB", "CD"), "kappa"] == ""
    )  # the number itself stays empty, not a made-up value


def test_verdicts_from_before_readers_are_named_in_export_and_agreement(
    tmp_path, checkpoint, capsys
):
    """A single-reader database (no reader names) migrated: its verdicts appear under an explicit name."""
    from cxr_core.artifacts.review_store import LEGACY_READER
    from tests.review_fixtures import old_database

    frame = pd.read_csv(checkpoint / "eval" / "val" / "predictions.csv")
    images = frame["image_id"].astype(str).tolist()[:10]
    cls = [c.split(":", 1)[1] for c in frame.columns if c.startswith("prob:")][0]
    old = ["agree" if i % 3 else "model_wrong" for i in range(10)]
    rows = (
        "INSERT INTO sessions (name, checkpoint, eval_run, filters, created, position) VALUES "
        f"('before readers', '{checkpoint}', 'val', '{{}}', '2026-12-01T20:05:11.120+00:00', 0);\n"
        "INSERT INTO verdicts VALUES "
        + ", ".join(
            f"(1, '{image_id}', '{cls}', '{verdict}', '', '', '2026-12-01T20:{10 + i}:00.000+00:00')"
            for i, (image_id, verdict) in enumerate(zip(images, old))
        )
        + ";"
    )
    old_database(tmp_path / "db", rows)
    store = ReviewStore(tmp_path / "db")
    for i, image_id in enumerate(images):
        store.record(1, image_id, cls, reviewer="CD", finding="present" if i % 2 else "absent")
    out = tmp_path / "out.csv"
    assert (
        main(
            [
                "review",
                "export",
                "--db",
                str(store.folder),
                "--session",
                "1",
                "--out",
                str(out),
                "--identifiable",
            ]
        )
        == 0
    )
    with out.open(newline="", encoding="utf-8") as handle:
        exported = list(csv.DictReader(handle))
    legacy = [r for r in exported if r["reviewer"] == LEGACY_READER]
    assert len(legacy) == 10 and [r["verdict"] for r in legacy] == old  # no verdict lost
    assert all(
        r["reader_call"] in {"present", "absent"} for r in legacy
    )  # read back from the old verdict
    assert (
        main(
            [
                "review",
                "agreement",
                "--db",
                str(store.folder),
                "--session",
                "1",
                "--bootstrap",
                "0",
                "--csv",
                str(tmp_path / "kappa.csv"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"readers: CD, {LEGACY_READER}" in printed
    table = pd.read_csv(tmp_path / "kappa.csv")
    pair = table[(table["rater_a"] == "CD") & (table["rater_b"] == LEGACY_READER)].iloc[0]
    legacy_calls = {r["image_id"]: r["reader_call"] for r in legacy}
    cd_calls = {r["image_id"]: r["reader_call"] for r in exported if r["reviewer"] == "CD"}
    assert pair["n_items"] == 10
    assert pair["kappa"] == pytest.approx(
        cohen_kappa_score([cd_calls[i] for i in images], [legacy_calls[i] for i in images])
    )
