"""Tiny datasets and configs for the training tests (64 px, small_cnn or unet_small, seconds per run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cxr_core.training.config import TrainConfig

SIZE = 64


def blob_image(rng: np.random.Generator, left: bool) -> np.ndarray:
    """A gray noisy film with a bright blob on the left or right half: learnable in a few steps."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cx = rng.integers(10, 24) if left else rng.integers(40, 54)
    cy = rng.integers(16, 48)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 40.0)
    return (np.clip(0.3 + 0.6 * blob + rng.normal(0, 0.05, blob.shape), 0, 1) * 255).astype(
        np.uint8
    )


def write_class_folders(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """``root/NORMAL`` (blob left) and ``root/PNEUMONIA`` (blob right); two images per patient."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("NORMAL", "PNEUMONIA")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            patient = c * 1000 + i // 2
            Image.fromarray(blob_image(rng, left=c == 0), mode="L").save(
                folder / f"person{patient}_{i % 2}.png"
            )
    return root


def write_disease_folders(root: Path, per_folder: int = 12, seed: int = 0) -> Path:
    """``<Disease>/{disease,no_finding}``: each image is labelled for one disease only (others NaN)."""
    rng = np.random.default_rng(seed)
    for d, disease in enumerate(("Edema", "Atelectasis")):
        for polarity in ("disease", "no_finding"):
            folder = root / disease / polarity
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_folder):
                patient = d * 1000 + (polarity == "disease") * 500 + i
                image = blob_image(rng, left=polarity == "disease")
                Image.fromarray(image, mode="L").save(folder / f"person{patient}_0.png")
    return root


def blob_pairs(n: int, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose bright pixels are exactly the mask (two ellipses, random position and size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        for cx in (size * 0.3, size * 0.7):
            cy, ry, rx = (
                rng.uniform(0.4, 0.6) * size,
                rng.uniform(0.2, 0.3) * size,
                rng.uniform(0.1, 0.15) * size,
            )
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx + rng.uniform(-2, 2)) / rx) ** 2 <= 1
    images = np.where(masks, 220, 30).astype(np.uint8)
    return images, masks


def write_mask_folders(root: Path, n: int = 12, seed: int = 1) -> Path:
    """``root/images/caseNN.png`` with its mask at ``root/masks/caseNN.png``; one patient each."""
    images, masks = blob_pairs(n, seed=seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(images[i]).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(masks[i].astype(np.uint8) * 255).save(root / "masks" / f"case{i:02d}.png")
    return root


def _with_overrides(data: dict, overrides: dict) -> dict:
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def tiny_segmentation_config(data_path: Path, out_dir: Path, **overrides) -> TrainConfig:
    data = {
        "task": "segmentation",
        "data": {"path": str(data_path), "format": "masks", "val": 0.25, "cache_size": SIZE},
        "model": {"name": "unet_small", "in_chans": 1},
        "preprocess": {"input_size": SIZE},
        "augment": {"rotation": 5.0, "crop_scale": [0.9, 1.0]},
        "optim": {"lr": 0.01, "batch_size": 4},
        "schedule": {"name": "constant"},
        "eval": {"n_boot": 100},
        "epochs": 2,
        "num_workers": 0,
        "device": "cpu",
        "out_dir": str(out_dir),
    }
    return TrainConfig.from_dict(_with_overrides(data, overrides))


def tiny_config(data_path: Path, out_dir: Path, cache_dir: Path, **overrides) -> TrainConfig:
    data = {
        "data": {
            "path": str(data_path),
            "val": 0.25,
            "cache_dir": str(cache_dir),
            "cache_size": SIZE,
        },
        "model": {"name": "small_cnn", "in_chans": 1},
        "preprocess": {"input_size": SIZE},
        "augment": {"rotation": 10.0, "crop_scale": [0.8, 1.0]},
        "optim": {"name": "adamw", "lr": 0.003, "batch_size": 8},
        "eval": {"n_boot": 50, "batch_size": 16},
        "epochs": 2,
        "num_workers": 0,
        "device": "cpu",
        "out_dir": str(out_dir),
    }
    return TrainConfig.from_dict(_with_overrides(data, overrides))


@pytest.fixture(scope="session")
def class_folders(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("class_folders"))


@pytest.fixture(scope="session")
def disease_folders(tmp_path_factory) -> Path:
    return write_disease_folders(tmp_path_factory.mktemp("disease_folders"))


@pytest.fixture(scope="session")
def make_blob_pairs():
    """``make_blob_pairs(n, size=64, seed=0) -> (uint8 images, bool masks)``."""
    return blob_pairs


@pytest.fixture(scope="session")
def mask_folders(tmp_path_factory) -> Path:
    return write_mask_folders(tmp_path_factory.mktemp("mask_folders") / "blobs")


@pytest.fixture(scope="session")
def make_segmentation_config():
    """``make_segmentation_config(data_path, out_dir, section__key=value, ...) -> TrainConfig``."""
    return tiny_segmentation_config


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def make_config():
    """``make_config(data_path, out_dir, cache_dir, section__key=value, ...) -> TrainConfig``."""
    return tiny_config


@pytest.fixture(scope="session")
def make_class_folders():
    """``make_class_folders(root, per_class=20, seed=0) -> root``."""
    return write_class_folders


def sigkill_then_resume(config: TrainConfig, tmp_path: Path) -> subprocess.CompletedProcess:
    """``cxr train`` in a child process, killed with SIGKILL as soon as its first epoch's
    resumable state is on disk (wherever it is in the second epoch by then), then continued
    with ``--resume`` to the end. Returns the resumed run."""
    config_path = tmp_path / f"{Path(config.out_dir).name}.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()))
    cmd = [sys.executable, "-m", "cxr_core", "train", "--config", str(config_path), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    state = Path(config.out_dir) / "train_state.pt"
    with subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        while not state.exists() and proc.poll() is None:
            time.sleep(0.02)  # waiting for the file, not for a guessed duration
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run ended before it was killed: {stderr[-2000:]}"
    )
    return subprocess.run(
        [*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=900, check=False
    )


@pytest.fixture(scope="session")
def killed_and_resumed():
    """``killed_and_resumed(config, tmp_path) -> CompletedProcess`` (see :func:`sigkill_then_resume`)."""
    return sigkill_then_resume
