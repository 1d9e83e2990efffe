"""Shared fixtures. Tests that need the real data in ../shared/data skip cleanly without it.

``pytest --cpu-load N`` runs N CPU-bound processes beside the tests for the whole session (stopped
at its end), to check that the tests, the browser tests above all, hold on a busy machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CXR_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("OMP_NUM_THREADS", "2")


BUSY = "while True: pass"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-load",
        type=int,
        default=0,
        metavar="N",
        help="run N CPU-bound processes beside the tests (a busy machine), stopped when the session ends",
    )


def pytest_configure(config: pytest.Config) -> None:
    config._cpu_load = [  # type: ignore[attr-defined]
        subprocess.Popen([sys.executable, "-c", BUSY])
        for _ in range(config.getoption("--cpu-load"))
    ]


def pytest_report_header(config: pytest.Config) -> str | None:
    busy = getattr(config, "_cpu_load", [])
    return f"cpu load: {len(busy)} busy process(es) beside the tests" if busy else None


def pytest_unconfigure(config: pytest.Config) -> None:
    for proc in getattr(config, "_cpu_load", []):
        proc.terminate()
    for proc in getattr(config, "_cpu_load", []):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available at {path}")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def nih14_root() -> Path:
    return _require(SHARED_DATA / "nih14")


@pytest.fixture(scope="session")
def pneumonia_root() -> Path:
    return _require(SHARED_DATA / "pneumonia" / "chest_xray")


@pytest.fixture(scope="session")
def covid_root() -> Path:
    return _require(SHARED_DATA / "covid19")


@pytest.fixture(scope="session")
def labels_root() -> Path:
    return _require(SHARED_DATA / "labels")


@pytest.fixture(scope="session")
def montgomery_root() -> Path:
    """NLM Montgomery lung masks: images/ + masks/ (138 pairs, 256 px)."""
    return _require(SHARED_DATA / "lungmasks" / "montgomery")


@pytest.fixture(scope="session")
def kermany_subset(pneumonia_root):
    """``make(dest, per_class=24)``: a class-folder copy of the first real Kermany images of each
    class, for tests that train or evaluate on a small dataset they may also modify."""

    def make(dest: Path, per_class: int = 24) -> Path:
        for folder in ("NORMAL", "PNEUMONIA"):
            (dest / folder).mkdir(parents=True)
            for src in sorted((pneumonia_root / "train" / folder).glob("*.jpeg"))[:per_class]:
                shutil.copy(src, dest / folder / src.name)
        return dest

    return make


@pytest.fixture(scope="session")
def nih_subset(nih14_root):
    """``make(dest, count=40)``: an NIH folder of the first real radiographs (linked) with their
    rows of Data_Entry_2017.csv, for tests that evaluate full-size networks on a few images."""

    def make(dest: Path, count: int = 40) -> Path:
        import pandas as pd

        entries = pd.read_csv(nih14_root / "Data_Entry_2017.csv", dtype=str, keep_default_na=False)
        names = sorted(p.name for p in (nih14_root / "images").glob("*.png"))[:count]
        (dest / "images").mkdir(parents=True)
        for name in names:
            (dest / "images" / name).symlink_to(nih14_root / "images" / name)
        entries[entries["Image Index"].isin(names)].to_csv(
            dest / "Data_Entry_2017.csv", index=False
        )
        return dest

    return make


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (tests/postgres_fixture.py); skipped when it cannot start."""
    from tests.postgres_fixture import running_postgres

    with running_postgres() as url:
        yield url


@pytest.fixture
def postgres_db(postgres_server) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    from tests.postgres_fixture import new_database

    return new_database(postgres_server)
