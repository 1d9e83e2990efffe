"""Two server processes on one review database: no verdict lost or overwritten under load.

Runs ``benchmarks/bench_review_db_load.py`` (two processes, each one store with reader threads,
every reader saving the same (film, finding) pairs twice) and checks what the database holds
against what each reader saved. The full load (8 readers x 500 saves) is on PostgreSQL, the
shared-database engine; a small load runs on both engines in every test run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_review_db_load.py"


def _load(db: str, readers: int, writes: int) -> dict:
    root = str(BENCH.parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, str(BENCH), "--db", db, "--readers", str(readers)]
        + ["--writes", str(writes), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_nothing_lost(result: dict, readers: int, writes: int) -> None:
    assert result["writes"] == readers * writes
    assert result["verdicts"] == readers * writes // 2
    assert (result["lost"], result["overwritten"], result["history_missing"]) == (0, 0, 0)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_two_servers_small_load_loses_nothing(engine, request, tmp_path):
    db = request.getfixturevalue("postgres_db") if engine == "postgres" else str(tmp_path)
    _assert_nothing_lost(_load(db, readers=4, writes=20), readers=4, writes=20)


@pytest.mark.slow
def test_two_postgres_servers_8_readers_500_writes_lose_nothing(postgres_db):
    _assert_nothing_lost(_load(postgres_db, readers=8, writes=500), readers=8, writes=500)
