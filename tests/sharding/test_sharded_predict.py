"""``cxr predict`` under torchrun (two Gloo processes on CPU) and after SIGKILL.

Two processes write the table one process writes; each says its share; one failing process
ends the job within seconds with its error; a run killed at any point and started again ends
with the table an uninterrupted run writes, byte for byte.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from cxr_core.artifacts.prediction_table import read_prediction_table
from cxr_core.artifacts.shards import WORK_DIR
from tests.cli import test_predict
from tests.sharding.launch import kill_when, run, single_command, torchrun_command

checkpoint = test_predict.checkpoint  # the tiny NIH14 checkpoint (a module fixture)
N_FILMS = 13  # 12 real radiographs + a truncated PNG


@pytest.fixture(scope="module")
def films(nih14_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("films")
    (folder / "nested").mkdir()
    sources = sorted((nih14_root / "images").glob("*.png"))[:12]
    for i, source in enumerate(sources):
        (folder / ("nested" if i % 4 == 0 else "") / source.name).symlink_to(source)
    (folder / "corrupt.png").write_bytes(sources[0].read_bytes()[:200])
    return folder


def _args(films, checkpoint, out):
    return ["predict", str(films), "--checkpoint", str(checkpoint), "--out", str(out)] + [
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def reference(films, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    done = run(single_command(_args(films, checkpoint, out)))
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "predictions.csv"


def test_two_processes_write_the_table_one_process_writes(films, checkpoint, reference, tmp_path):
    done = run(torchrun_command(_args(films, checkpoint, tmp_path)))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shares = {
        int(r): (int(k), int(m))
        for r, k, m in re.findall(r"rank (\d)/2: (\d+) of (\d+) files", done.stdout + done.stderr)
    }
    assert sorted(shares) == [0, 1] and all(m == N_FILMS for _, m in shares.values())
    assert shares[0][0] + shares[1][0] == N_FILMS and min(k for k, _ in shares.values()) >= 4
    one = read_prediction_table(reference).frame
    two = read_prediction_table(tmp_path / "predictions.csv").frame
    assert list(two.columns) == list(one.columns)
    text = [c for c in one.columns if not c.startswith(("prob:", "threshold:"))]
    pd.testing.assert_frame_equal(two[text], one[text])  # same rows, order, outcomes, calls
    probs = [c for c in one.columns if c.startswith("prob:")]
    np.testing.assert_allclose(two[probs].to_numpy(), one[probs].to_numpy(), atol=1e-6)
    assert (one["outcome"] == "unreadable").sum() == 1
    assert not (tmp_path / WORK_DIR).exists()


def test_a_failing_process_ends_the_job_within_seconds(films, checkpoint, tmp_path):
    started = time.monotonic()
    done = run(
        torchrun_command(_args(films, checkpoint, tmp_path), fault="fail-rank-1"), timeout=300
    )
    seconds = time.monotonic() - started
    assert done.returncode != 0
    assert "injected failure on rank 1" in done.stderr
    assert not (tmp_path / "predictions.csv").exists()
    assert seconds < 120, f"the job took {seconds:.0f} s to end after rank 1 failed"


def _progress(work) -> float:
    """Chunks done, or -1 before the work folder exists (a kill at 0 then hits a planned run)."""
    return len(list(work.glob("chunk-*"))) if work.is_dir() else -1


@pytest.mark.slow
def test_killed_runs_resume_to_the_uninterrupted_table(films, checkpoint, reference, tmp_path):
    work = tmp_path / WORK_DIR
    cmd = single_command(_args(films, checkpoint, tmp_path))
    n_chunks = 7  # 13 files, chunks of one batch (2)
    rng = np.random.default_rng(29)
    kills = 0
    for target in rng.integers(0, n_chunks, size=4):  # kill once `target` chunks are done
        kills += kill_when(cmd, lambda t=int(target): _progress(work) >= t)
    assert kills >= 3
    done = run(cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "predictions.csv").read_bytes() == reference.read_bytes()
    assert not work.exists()
