"""Masks of the registered formats feed segmentation training and evaluation: SIIM-ACR pneumothorax
run lengths and the COVID-19 Radiography Database's lung masks, through ``data.format``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from cxr_core.cli.main import main
from cxr_core.models.checkpoint import read_model_card
from cxr_core.training import train
from cxr_core.training.config import TrainConfig


def _config(data, fmt: str, out, **data_extra) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "task": "segmentation",
            "data": {"path": str(data), "format": fmt, "val": 0.34, "cache_size": 64, **data_extra},
            "model": {"name": "unet_small", "in_chans": 1},
            "preprocess": {"input_size": 64},
            "optim": {"lr": 0.01, "batch_size": 4},
            "schedule": {"name": "constant"},
            "eval": {"n_boot": 20},
            "epochs": 1,
            "device": "cpu",
            "out_dir": str(out),
        }
    )


def test_siim_pneumothorax_masks_train_and_evaluate(labels_root, tmp_path, capsys):
    rows = pd.read_csv(labels_root / "siim-pneumothorax-train-rle.csv.gz", dtype=str)
    positive = rows[" EncodedPixels"].str.strip() != "-1"
    ids = [
        *rows.loc[positive, "ImageId"].drop_duplicates().head(4),
        *rows.loc[~positive, "ImageId"].head(2),
    ]
    folder = tmp_path / "siim"
    (folder / "dicom-images-train").mkdir(parents=True)
    rows[rows["ImageId"].isin(ids)].to_csv(folder / "train-rle.csv", index=False)
    rng = np.random.default_rng(0)
    for image in ids:
        Image.fromarray(rng.integers(0, 255, (128, 128), dtype=np.uint8)).save(
            folder / "dicom-images-train" / f"{image}.png"
        )
    result = train(_config(folder, "siim-acr", tmp_path / "run"), progress=False)
    card = read_model_card(result.best_checkpoint)
    assert card.classes == ("pneumothorax",) and card.label_space["name"] == "pneumothorax_masks"
    assert card.data["format"] == "siim-acr" and len(card.data["val_ids"]) == 2
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(result.best_checkpoint),
                "--out",
                str(tmp_path / "eval"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n_images"] == 2 and "dice" in capsys.readouterr().out


def test_covid_radiography_lung_masks_train(tmp_path):
    root = tmp_path / "COVID-19_Radiography_Dataset"
    rng = np.random.default_rng(1)
    for cls in ("COVID", "Normal"):
        for i in range(1, 4):
            for sub, size in (("images", 96), ("masks", 64)):
                (root / cls / sub).mkdir(parents=True, exist_ok=True)
                pixels = rng.integers(0, 255, (size, size), dtype=np.uint8)
                if sub == "masks":
                    pixels = (
                        np.where(np.arange(size)[None, :] < size // 2, 255, 0)
                        .astype(np.uint8)
                        .repeat(size, 0)
                    )
                Image.fromarray(pixels).save(root / cls / sub / f"{cls}-{i}.png")
    result = train(_config(tmp_path, "covid-radiography", tmp_path / "run"), progress=False)
    card = read_model_card(result.best_checkpoint)
    assert card.classes == ("lung",) and card.label_space["name"] == "lungs"
    assert 0.4 < card.data["mask_fraction"]["median"] < 0.6
