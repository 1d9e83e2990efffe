"""Two CPU processes under torchrun (gloo) stand in for several GPUs under NCCL.

They train together (a classifier or a segmentation model) and write one loadable checkpoint;
validate with rank 0's BatchNorm statistics; split a global batch; resume bit-identically with
each rank's own random state; and when one rank fails, the job ends within seconds with that
rank's error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.models.checkpoint import load_checkpoint

DRIVER = Path(__file__).with_name("ddp_driver.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def _torchrun(config, tmp_path, *args, driver_mode: str | None = None, timeout: float = 300):
    config_path = tmp_path / f"{Path(config.out_dir).name}.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if driver_mode is None:
        cmd = [
            *launcher,
            "-m",
            "cxr_core",
            "train",
            "--config",
            str(config_path),
            "--no-progress",
            *args,
        ]
    else:
        cmd = [*launcher, str(DRIVER), str(config_path), driver_mode, *args]
    # Own process group, so that a hung job's workers are killed with the launcher, not orphaned.
    with subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_torchrun_two_processes_on_cpu(class_folders, cache_dir, tmp_path, make_config):
    out = tmp_path / "ddp_run"
    config = make_config(class_folders, out, cache_dir, epochs=1, num_workers=0)
    done = _torchrun(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ckpt = load_checkpoint(out / "model.safetensors", expect_architecture="small_cnn")
    assert ckpt.card.training["world_size"] == 2
    assert ckpt.card.training["global_batch_size"] == 16  # batch_size 8 is per process
    assert "global batch 16 images per optimizer step = 8 per process" in done.stderr
    assert ckpt.build_model() is not None
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # rank 0 alone writes the log
    # Validation was gathered from both ranks: every val image predicted exactly once.
    frame, _ = load_predictions(out / "eval" / "val" / "predictions.csv")
    assert len(frame) == ckpt.card.data["splits"]["val"]["images"] == frame["image_id"].nunique()
    # The epoch's metric came from the two ranks' gathered shards; the final report from rank 0
    # predicting everything. They agree only if the gather lost and duplicated nothing.
    report = json.loads((out / "eval" / "val" / "report.json").read_text())
    assert rows[0]["val_balanced_accuracy"] == pytest.approx(
        report["multiclass"]["balanced_accuracy"], abs=1e-12
    )
    for name, auroc in rows[0]["val_auroc"].items():
        assert auroc == pytest.approx(report["per_class"][name]["auroc"], abs=1e-9)
    assert not [p for p in out.rglob("*.tmp")]


def test_ranks_validate_with_rank_0_batchnorm_statistics_and_split_the_global_batch(
    class_folders, cache_dir, tmp_path, make_config
):
    out = tmp_path / "record"
    config = make_config(class_folders, out, cache_dir, epochs=1, optim__global_batch_size=8)
    done = _torchrun(config, tmp_path, driver_mode="record")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["batch_size"] for r in ranks] == [4, 4]
    assert load_checkpoint(out / "model.safetensors").card.training["global_batch_size"] == 8
    running = [k for k in ranks[0]["buffers"] if k.endswith("running_mean")]
    assert running, "small_cnn should have BatchNorm layers"
    for key, value in ranks[0]["buffers"].items():
        assert torch.equal(value, ranks[1]["buffers"][key]), key  # each rank's last batch differed
    saved = load_file(str(out / "last.safetensors"))
    for key in running:
        assert torch.equal(saved[key], ranks[0]["buffers"][key]), (
            key
        )  # and they are the checkpoint's


def test_one_failing_rank_ends_the_job_within_seconds_with_its_error(
    class_folders, cache_dir, tmp_path, make_config
):
    config = make_config(class_folders, tmp_path / "fail", cache_dir, epochs=1)
    started = time.monotonic()
    done = _torchrun(config, tmp_path, driver_mode="fail-rank-1", timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode != 0
    assert "injected failure on rank 1" in done.stderr
    assert seconds < 60, f"the job took {seconds:.0f} s to notice the failed rank"


@pytest.mark.slow
def test_two_process_resume_is_bit_identical_with_per_rank_random_state(
    class_folders, cache_dir, tmp_path, make_config
):
    # The ranks' generators differ (on GPUs each has its own CUDA generator); resuming every rank
    # with rank 0's states, as before, changed rank 1's dropout and so the averaged gradients.
    settings = {"epochs": 2, "model__dropout": 0.3, "ema__decay": 0.9}
    straight = make_config(class_folders, tmp_path / "straight", cache_dir, **settings)
    chunked = make_config(class_folders, tmp_path / "chunked", cache_dir, **settings)
    for config, args in (
        (straight, ()),
        (chunked, ("--stop-after", "1")),
        (chunked, ("--resume",)),
    ):
        done = _torchrun(config, tmp_path, *args, driver_mode="diverge")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "chunked" / "last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after a two-process resume"


def test_segmentation_torchrun_two_processes_on_cpu(
    mask_folders, tmp_path, make_segmentation_config
):
    out = tmp_path / "ddp_segmentation"
    config = make_segmentation_config(mask_folders, out, epochs=1, optim__batch_size=2)
    done = _torchrun(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ckpt = load_checkpoint(out / "model.safetensors", expect_architecture="unet_small")
    assert ckpt.card.training["world_size"] == 2 and ckpt.card.training["global_batch_size"] == 4
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # rank 0 alone writes the log
    # The epoch's Dice came from the two ranks' gathered shards of the validation pairs; the
    # final report from rank 0 scoring them all. They agree only if the gather lost nothing.
    report = json.loads((out / "eval" / "val" / "report.json").read_text())
    assert report["n_images"] == len(ckpt.card.data["val_ids"]) == 3
    assert rows[0]["val_dice"] == pytest.approx(report["metrics"]["dice"]["mean"], abs=1e-9)
    assert "validation Dice" in done.stdout


@pytest.mark.slow
def test_segmentation_two_process_resume_is_bit_identical(
    mask_folders, tmp_path, make_segmentation_config
):
    settings = {"epochs": 2, "model__dropout": 0.3, "optim__batch_size": 2}
    straight = make_segmentation_config(mask_folders, tmp_path / "straight", **settings)
    chunked = make_segmentation_config(mask_folders, tmp_path / "chunked", **settings)
    for config, args in (
        (straight, ()),
        (chunked, ("--stop-after", "1")),
        (chunked, ("--resume",)),
    ):
        done = _torchrun(config, tmp_path, *args, driver_mode="diverge")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    a = load_file(str(tmp_path / "straight" / "last.safetensors"))
    b = load_file(str(tmp_path / "chunked" / "last.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after a two-process resume"
