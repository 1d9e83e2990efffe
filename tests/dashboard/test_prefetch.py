"""The prefetcher runs queued jobs once, hands their results over, and recomputes failed ones."""

from __future__ import annotations

import threading
import time

import pytest

from dashboard.prefetch import Prefetcher


def test_scheduled_job_runs_once_and_get_waits_for_it():
    calls = []
    gate = threading.Event()

    def job():
        gate.wait(5)
        calls.append(1)
        return "done"

    p = Prefetcher()
    p.schedule("k", job)
    p.schedule("k", job)  # already queued
    assert not p.ready("k")
    gate.set()
    assert p.get("k", lambda: "not this") == "done"
    assert p.ready("k") and calls == [1]


def test_get_without_schedule_computes_and_keeps():
    p = Prefetcher(max_items=2)
    assert p.get("a", lambda: 1) == 1
    assert p.get("a", lambda: 2) == 1
    p.get("b", lambda: 3)
    p.get("c", lambda: 4)
    assert p.get("a", lambda: 5) == 5  # evicted, recomputed


def test_failed_job_raises_then_recomputes():
    p = Prefetcher()

    def boom():
        raise ValueError("bad image")

    p.schedule("k", boom)
    time.sleep(0.05)
    with pytest.raises(ValueError, match="bad image"):
        p.get("k", lambda: "unused")
    assert p.get("k", lambda: "fresh") == "fresh"
