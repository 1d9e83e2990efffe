"""Two CPU processes under torchrun (gloo) train together and write one loadable checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.models.checkpoint import load_checkpoint


def test_torchrun_two_processes_on_cpu(class_folders, cache_dir, tmp_path, make_config):
    out = tmp_path / "ddp_run"
    config = make_config(class_folders, out, cache_dir, epochs=1, num_workers=0)
    config_path = tmp_path / "ddp.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cxr_core", "train", "--config", str(config_path), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ckpt = load_checkpoint(out / "model.safetensors", expect_architecture="small_cnn")
    assert ckpt.card.training["world_size"] == 2
    assert ckpt.build_model() is not None
    rows = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert len(rows) == 1  # rank 0 alone writes the log
    # Validation was gathered from both ranks: every val image predicted exactly once.
    frame, _ = load_predictions(out / "eval" / "val" / "predictions.csv")
    assert len(frame) == ckpt.card.data["splits"]["val"]["images"] == frame["image_id"].nunique()
    # The epoch's metric came from the two ranks' gathered shards; the final report from rank 0
    # predicting everything. They agree only if the gather lost and duplicated nothing.
    report = json.loads((out / "eval" / "val" / "report.json").read_text())
    assert rows[0]["val_balanced_accuracy"] == pytest.approx(report["multiclass"]["balanced_accuracy"], abs=1e-12)
    for name, auroc in rows[0]["val_auroc"].items():
        assert auroc == pytest.approx(report["per_class"][name]["auroc"], abs=1e-9)
    assert not [p for p in out.rglob("*.tmp")]
