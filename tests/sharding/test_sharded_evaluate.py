"""``cxr evaluate`` under torchrun (two Gloo processes on CPU) and after SIGKILL.

Two processes score the split one process scores (same predictions table and report, numbers
to float tolerance); a failing process ends the job with its error; a run killed at any point
(building chunk caches, predicting, scoring) and started again writes the uninterrupted run's
files byte for byte.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from cxr_core.artifacts.prediction_table import read_prediction_table
from cxr_core.artifacts.shards import WORK_DIR
from tests.cli import test_predict
from tests.sharding.launch import kill_when, run, single_command, torchrun_command

checkpoint = test_predict.checkpoint  # the tiny NIH14 checkpoint (a module fixture)
N_VAL = 20  # of the 40 NIH films, split by patient


@pytest.fixture(scope="module")
def nih40(nih_subset, tmp_path_factory):
    return nih_subset(tmp_path_factory.mktemp("nih40"), count=40)


def _args(data, checkpoint, out, cache):
    return [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--data",
        str(data),
        "--val",
        "0.5",
        "--out",
        str(out),
        "--cache-dir",
        str(cache),
        "--n-boot",
        "50",
        "--batch-size",
        "4",
        "--no-progress",
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="module")
def reference(nih40, checkpoint, tmp_path_factory):
    base = tmp_path_factory.mktemp("one_process")
    done = run(single_command(_args(nih40, checkpoint, base / "out", base / "cache")))
    assert done.returncode == 0, done.stderr[-3000:]
    return base / "out"


def _close(a, b, path="report"):
    """Two reports equal, numbers to 1e-9 (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), path
    else:
        assert a == b, path


def test_two_processes_score_the_split_one_process_scores(nih40, checkpoint, reference, tmp_path):
    out = tmp_path / "out"
    done = run(torchrun_command(_args(nih40, checkpoint, out, tmp_path / "cache")))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    shares = re.findall(r"rank (\d)/2: (\d+) of (\d+) images", done.stdout + done.stderr)
    assert sorted(r for r, _, _ in shares) == ["0", "1"]
    assert sum(int(k) for _, k, _ in shares) == N_VAL and {m for _, _, m in shares} == {str(N_VAL)}
    one = read_prediction_table(reference / "predictions.csv").frame
    two = read_prediction_table(out / "predictions.csv").frame
    probs = [c for c in one.columns if c.startswith("prob:")]
    pd.testing.assert_frame_equal(two.drop(columns=probs), one.drop(columns=probs))
    np.testing.assert_allclose(two[probs].to_numpy(), one[probs].to_numpy(), atol=1e-6)
    first = json.loads((reference / "report.json").read_text())
    second = json.loads((out / "report.json").read_text())
    for report in (first, second):
        report["evaluation"].pop("checkpoint")
    _close(second, first)
    assert done.stdout.count("multilabel evaluation of 20 cases") == 1  # rank 0 reports
    assert not (out / WORK_DIR).exists()


def test_a_failing_process_ends_the_evaluation_with_its_error(nih40, checkpoint, tmp_path):
    cmd = torchrun_command(
        _args(nih40, checkpoint, tmp_path / "o", tmp_path / "c"), fault="fail-rank-1"
    )
    done = run(cmd, timeout=300)
    assert done.returncode != 0 and "injected failure on rank 1" in done.stderr
    assert not (tmp_path / "o" / "report.json").exists()


def _progress(out) -> int:
    """Chunks done, or -1 before the work folder exists."""
    work = out / WORK_DIR
    return len(list(work.glob("chunk-*"))) if work.is_dir() else -1


@pytest.mark.slow
def test_killed_evaluations_resume_to_the_uninterrupted_files(
    nih40, checkpoint, reference, tmp_path
):
    out = tmp_path / "out"
    cmd = single_command(_args(nih40, checkpoint, out, tmp_path / "cache"))
    rng = np.random.default_rng(30)
    kills = 0
    for target in rng.integers(-1, 5, size=4):  # 5 chunks of 4 films; -1: before any plan
        kills += kill_when(cmd, lambda t=int(target): _progress(out) >= t)
    assert kills >= 3
    done = run(cmd)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("predictions.csv", "report.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (out / WORK_DIR).exists()
