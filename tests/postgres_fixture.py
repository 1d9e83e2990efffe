"""A real PostgreSQL server for the stores' tests, started in a temporary folder on a free port.

Debian's ``postgresql`` package (``.ci/run`` installs it): ``initdb`` makes a cluster owned by
the ``postgres`` user (run through ``runuser`` when the tests run as root, which PostgreSQL
refuses to run as), listening on 127.0.0.1 only, trusting local connections of the user
``cxr``, with the C locale (text sorts by code point, as in SQLite). Each test gets a database
of its own (:func:`new_database`). When the binaries are missing or the server does not come
up, the tests that need it are skipped with the reason and the server's log.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

USER = "cxr"
_counter = itertools.count()


def _binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's versioned folder."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_owner(command: list[str]) -> list[str]:
    """Run as ``postgres`` when we are root (the server refuses root)."""
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@contextmanager
def running_postgres() -> Iterator[str]:
    """A started server; yields the URL of its ``postgres`` database as user ``cxr``."""
    bin_dir = _binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="cxr-pg-"))
    data, log = folder / "data", folder / "server.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = _free_port()
    try:
        init = subprocess.run(
            _as_owner(
                [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust"]
                + ["--no-locale", "-E", "UTF8", "--no-sync"]
            ),
            capture_output=True,
            text=True,
        )
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-400:]}")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log)])
            + ["-o", options, "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
        )
        if start.returncode != 0:
            text = log.read_text(errors="replace")[-600:] if log.exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {text.strip()}")
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                capture_output=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    import psycopg

    name = f"cxr_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + f"/{name}"
