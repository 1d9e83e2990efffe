"""An interrupted run, resumed, ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cxr_core.artifacts.run_dir import STATE_FILE
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.training import train
from cxr_core.training.state import load_train_state


def _weights(path):
    return load_file(str(path))


def test_resume_is_bit_identical_to_uninterrupted_run(
    class_folders, cache_dir, tmp_path, make_config
):
    # Dropout, augmentation, cosine warm-up and EMA all draw on state that must survive the restart.
    settings = dict(
        model__dropout=0.2, schedule__name="cosine", schedule__warmup_epochs=0.5, ema__decay=0.9
    )
    straight = make_config(class_folders, tmp_path / "straight", cache_dir, **settings)
    chunked = make_config(class_folders, tmp_path / "chunked", cache_dir, **settings)

    full = train(straight, progress=False)
    paused = train(chunked, progress=False, stop_after_epochs=1)
    assert full.completed and not paused.completed and paused.epochs_run == 1
    assert paused.report is None
    resumed = train(chunked, resume=True, progress=False)
    assert resumed.completed and resumed.epochs_run == 2

    _same_weights(tmp_path / "straight", tmp_path / "chunked")
    state_a = load_train_state(tmp_path / "straight")
    state_b = load_train_state(tmp_path / "chunked")
    for key in state_a["model"]:
        assert torch.equal(state_a["model"][key], state_b["model"][key])
    assert state_a["schedule"] == state_b["schedule"]

    log_a = [
        json.loads(line)
        for line in (tmp_path / "straight" / "training_log.jsonl").read_text().splitlines()
    ]
    log_b = [
        json.loads(line)
        for line in (tmp_path / "chunked" / "training_log.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in log_b] == [0, 1]
    # The losses of the former training/loop.py Trainer, recorded on this config before the engine replaced
    # it (the weights were bit-identical then; the tolerance only absorbs other CPUs' rounding).
    assert [r["train_loss"] for r in log_a] == pytest.approx([0.3700094, 0.0391817], rel=1e-4)
    assert [r["val_loss"] for r in log_a] == pytest.approx([0.6565883, 0.5294587], rel=1e-4)
    assert [r["train_loss"] for r in log_a] == [r["train_loss"] for r in log_b]
    assert [r["val_loss"] for r in log_a] == [r["val_loss"] for r in log_b]


def _same_weights(a_dir, b_dir) -> None:
    for name in ("last.safetensors", "model.safetensors"):
        a, b = _weights(a_dir / name), _weights(b_dir / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"


@pytest.mark.slow  # three processes: ~40 s of CPU
def test_classification_resume_after_sigkill_is_bit_identical(
    class_folders, cache_dir, tmp_path, make_config, killed_and_resumed
):
    settings = dict(epochs=3, model__dropout=0.2, schedule__name="cosine", ema__decay=0.9)
    straight = make_config(class_folders, tmp_path / "straight", cache_dir, **settings)
    killed = make_config(class_folders, tmp_path / "killed", cache_dir, **settings)
    train(straight, progress=False)
    resumed = killed_and_resumed(killed, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "best val_balanced_accuracy" in resumed.stdout
    _same_weights(tmp_path / "straight", tmp_path / "killed")
    log = (tmp_path / "killed" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [0, 1, 2]


def test_train_state_loads_with_weights_only(class_folders, cache_dir, tmp_path, make_config):
    config = make_config(class_folders, tmp_path / "run", cache_dir, epochs=1)
    train(config, progress=False)
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert state["epoch"] == 0
    assert {"optimizer", "schedule", "scaler", "rng", "best_metric", "bad_epochs"} <= set(state)
    assert isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)


def test_resume_refusals(class_folders, cache_dir, tmp_path, make_config):
    config = make_config(class_folders, tmp_path / "run", cache_dir, epochs=1)
    with pytest.raises(CheckpointError, match="does not exist"):
        train(config, resume=True, progress=False)
    train(config, progress=False)
    with pytest.raises(ConfigError, match="--resume"):
        train(config, progress=False)  # would silently overwrite the finished run
    other = make_config(class_folders, tmp_path / "run", cache_dir, epochs=1, data__split_seed=5)
    with pytest.raises(CheckpointError, match="fingerprint"):
        train(other, resume=True, progress=False)
    (tmp_path / "run" / STATE_FILE).write_bytes(b"garbage, not a training state")
    with pytest.raises(CheckpointError, match="corrupted"):
        train(config, resume=True, progress=False)


def test_weights_do_not_depend_on_the_number_of_workers(
    class_folders, cache_dir, tmp_path, make_config
):
    runs = {}
    for workers in (0, 2):
        config = make_config(
            class_folders,
            tmp_path / f"w{workers}",
            cache_dir,
            epochs=1,
            num_workers=workers,
            model__dropout=0.2,
        )
        train(config, progress=False)
        runs[workers] = _weights(tmp_path / f"w{workers}" / "last.safetensors")
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[2][key]), key
