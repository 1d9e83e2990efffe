"""``cxr review export`` on a PostgreSQL review database: chosen by ``--db URL`` or
``CXR_REVIEW_DB``, and the same rows as the same verdicts in a SQLite file."""

from __future__ import annotations

import csv

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.cli.main import main


def _fill(store: ReviewStore) -> None:
    s = store.create_session("shared", "no/such/checkpoint", "val", mode="blind_labels")
    for i in range(6):
        store.record(s.id, f"{i}.png", "Edema", reviewer="AB", finding="present", note="=1+1")
        store.record(s.id, f"{i}.png", "Edema", reviewer="CD", finding="absent", point=(0.25, 0.5))


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in r.items() if k != "updated"} for r in csv.DictReader(handle)]


def test_postgres_export_by_url_and_environment_equals_sqlite(postgres_db, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_PSEUDONYM_KEY", str(tmp_path / "pseudonym.key"))  # one install's key
    _fill(ReviewStore(postgres_db))
    _fill(ReviewStore(tmp_path / "sqlite"))
    by_url, by_env, local = tmp_path / "url.csv", tmp_path / "env.csv", tmp_path / "local.csv"
    assert main(["review", "export", "--db", postgres_db, "--out", str(by_url)]) == 0
    monkeypatch.setenv("CXR_REVIEW_DB", postgres_db)
    assert main(["review", "export", "--out", str(by_env)]) == 0
    assert main(["review", "export", "--db", str(tmp_path / "sqlite"), "--out", str(local)]) == 0
    assert len(_rows(by_url)) == 12
    assert _rows(by_url) == _rows(by_env) == _rows(local)
