"""Leftovers of killed processes: cache-build workers die with their parent; prune removes temp debris."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cxr_core.data.cache import prune_caches
from cxr_core.utils.atomic import write_text_atomically

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_building_process_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import time, sys
        import numpy as np, pandas as pd
        from PIL import Image
        import cxr_core.data.cache as cache
        from cxr_core.data.labels import NIH14
        from cxr_core.data.manifest import Manifest

        slow = cache.load_image
        def load_slowly(path, **kw):  # forked workers inherit this: decoding takes long enough to kill us
            time.sleep(0.5)
            return slow(path, **kw)
        cache.load_image = load_slowly
        rows = []
        for i in range(64):
            p = {str(tmp_path)!r} + f"/img{{i}}.png"
            Image.fromarray(np.full((40, 40), i, np.uint8)).save(p)
            rows.append({{"image_id": f"img{{i}}", "path": p, "patient_id": str(i), "view": "PA", "split": "train",
                         **{{c: 0.0 for c in NIH14.classes}}}})
        manifest = Manifest(pd.DataFrame(rows), NIH14, source="orphan test")
        print("building", flush=True)
        cache.ImageCache.build(manifest, {str(tmp_path / "cache")!r}, 32, workers=2, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        assert proc.stdout.readline().strip() == "building"
        deadline = time.monotonic() + 60
        while len(_children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _children(proc.pid)
        assert len(workers) >= 2, "the pool's workers never started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], (
            "decoding workers outlived their killed parent"
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        for worker in workers:  # should the fix regress, leave no orphans behind
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)


def test_stale_atomic_temp_files_are_removed_on_next_write_and_by_prune(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = folder / ".model.safetensors.4242-deadbeef.tmp"
    fresh = folder / ".report.json.4243-0badcafe.tmp"  # another process may be writing it right now
    other = folder / "notes.tmp"
    for path in (stale, fresh, other):
        path.write_text("partial")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    write_text_atomically(folder / "thresholds.json", "{}")
    assert not stale.exists() and fresh.exists() and other.exists()
    assert (folder / "thresholds.json").read_text() == "{}"

    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    debris = cache_dir / ".cache-64px-0123.json.99999-abcdef01.tmp"
    debris.write_text("x")
    os.utime(debris, (old, old))
    prune_caches(cache_dir, unused_days=30, dry_run=True)
    assert debris.exists()
    prune_caches(cache_dir, unused_days=30)
    assert not debris.exists()
