"""Tiny datasets and configs for the training tests (64 px, small_cnn, seconds per run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.from_dict(data)


@pytest.fixture(scope="session")
def class_folders(tmp_path_factory) -> Path:
    return write_class_folders(tmp_path_factory.mktemp("class_folders"))


@pytest.fixture(scope="session")
def disease_folders(tmp_path_factory) -> Path:
    return write_disease_folders(tmp_path_factory.mktemp("disease_folders"))


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
