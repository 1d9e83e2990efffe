"""``pytest --cpu-load N`` really loads the machine: N processes burn CPU while the tests run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process so far, in clock ticks (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_cpu_load_processes_burn_cpu_beside_the_tests(pytestconfig: pytest.Config):
    busy = pytestconfig._cpu_load
    assert len(busy) == pytestconfig.getoption("--cpu-load")
    if not busy:
        pytest.skip("run with --cpu-load N to load the machine")
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc to read CPU time from")
    assert all(proc.poll() is None for proc in busy)  # still running
    start = {proc.pid: _cpu_ticks(proc.pid) for proc in busy}
    deadline = time.monotonic() + 60
    while not all(_cpu_ticks(pid) > ticks for pid, ticks in start.items()):
        assert time.monotonic() < deadline, "the load processes used no CPU for a minute"
        time.sleep(0.05)  # polling their CPU time
