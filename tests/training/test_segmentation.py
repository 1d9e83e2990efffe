from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxr_core.cli.main import main
from cxr_core.data.dataset import AugmentConfig
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import ConfigError
from cxr_core.evaluation.segmentation import evaluate_segmentation
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.training.config import TrainConfig
from cxr_core.training.losses import DiceBCELoss
from cxr_core.training.segmentation import PairAugment, split_by_patient, train_segmentation

GRAY = PreprocessConfig(
    cache_size=64, input_size=48, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), in_chans=1
)


def _blobs(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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


def test_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    images, masks = _blobs(16)
    augment = PairAugment(GRAY, AugmentConfig(rotation=30.0, crop_scale=(0.5, 0.9), hflip=True))
    x, y = augment(torch.from_numpy(images)[:, None], torch.from_numpy(masks)[:, None])
    assert x.shape == (16, 1, 48, 48) and y.shape == (16, 1, 48, 48)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    bright = (
        x * 255 > 125
    )  # the image's own foreground after the transform (mean 0, std 1: x = gray / 255)
    agreement = (bright == y.bool()).float().mean().item()
    assert agreement > 0.99
    # ...and the transform really moved things: the masks differ from a plain resize of the originals.
    plain = (
        F.interpolate(torch.from_numpy(masks)[:, None].float(), size=(48, 48), mode="bilinear")
        >= 0.5
    )
    assert (plain != y.bool()).float().mean().item() > 0.05


def test_dice_bce_loss_equals_its_definition():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    p = torch.sigmoid(logits)
    bce = F.binary_cross_entropy(p, target)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    assert DiceBCELoss()(logits, target).item() == pytest.approx((bce + 1 - dice).item(), rel=1e-6)
    perfect = DiceBCELoss()(torch.where(target > 0, 20.0, -20.0), target).item()
    assert perfect < 1e-6


def test_patient_split_keeps_patients_whole_and_is_reproducible():
    patients = [f"p{i // 2}" for i in range(40)]  # two images per patient
    train, val = split_by_patient(patients, 0.25, seed=3)
    assert not {patients[i] for i in train} & {patients[i] for i in val}
    assert len({patients[i] for i in val}) == 5
    again = split_by_patient(list(reversed(patients)), 0.25, seed=3)[1]
    assert {patients[i] for i in val} == {list(reversed(patients))[i] for i in again}


def test_segmentation_config_rejects_a_classification_loss(tmp_path):
    with pytest.raises(ConfigError, match="loss.kind"):
        TrainConfig.from_dict(
            {"task": "segmentation", "data": {"path": "x"}, "loss": {"kind": "ce"}}
        )
    with pytest.raises(ConfigError, match="task"):
        TrainConfig.from_dict({"task": "detection", "data": {"path": "x"}})


def _write_blobs(root, n: int) -> None:
    images, masks = _blobs(n, seed=1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(images[i]).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(masks[i].astype(np.uint8) * 255).save(root / "masks" / f"case{i:02d}.png")


def test_training_writes_a_checkpoint_that_evaluate_reproduces(tmp_path):
    data = tmp_path / "blobs"
    _write_blobs(data, 8)
    config = TrainConfig.from_dict(
        {
            "task": "segmentation",
            "data": {"path": str(data), "format": "masks", "val": 0.25, "cache_size": 64},
            "model": {"name": "unet_small", "in_chans": 1},
            "preprocess": {"input_size": 64},
            "augment": {"rotation": 5.0, "crop_scale": [0.9, 1.0]},
            "optim": {"lr": 0.01, "batch_size": 4},
            "schedule": {"name": "constant"},
            "eval": {"n_boot": 100},
            "epochs": 2,
            "out_dir": str(tmp_path / "run"),
        }
    )
    result = train_segmentation(config, progress=False)
    log = [
        json.loads(line)
        for line in (tmp_path / "run" / "training_log.jsonl").read_text().splitlines()
    ]
    assert [row["epoch"] for row in log] == [1, 2]
    card = load_checkpoint(result.best_checkpoint).card
    assert card.label_space["task"] == "segmentation" and card.classes == ("lung",)
    assert len(card.data["val_ids"]) == 2 and not set(card.data["val_ids"]) & set(
        card.data["train_ids"]
    )
    assert 0.0 < card.data["mask_fraction"]["min"] <= card.data["mask_fraction"]["max"] < 1.0
    shipped = json.loads((tmp_path / "run" / "eval" / "val" / "report.json").read_text())
    assert card.validation["dice"] == shipped["metrics"]["dice"]
    frame, report = evaluate_segmentation(
        result.best_checkpoint, out_dir=tmp_path / "again", n_boot=100
    )
    assert list(frame["image_id"]) == card.data["val_ids"]
    for metric in ("dice", "iou", "hd95"):
        assert report["metrics"][metric] == pytest.approx(shipped["metrics"][metric])
    assert result.best_metric == pytest.approx(max(row["val_dice"] for row in log))
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(result.best_checkpoint),
            "--out",
            str(tmp_path / "cli"),
            "--n-boot",
            "100",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert cli["metrics"] == report["metrics"] and (tmp_path / "cli" / "scores.csv").is_file()


def test_an_unknown_adapter_option_is_a_config_error(tmp_path):
    config = {
        "task": "segmentation",
        "data": {"path": str(tmp_path), "adapter": {"mask_dir": "m"}},
        "model": {"name": "unet_small"},
        "out_dir": str(tmp_path / "run"),
    }
    with pytest.raises(
        ConfigError, match="data.adapter.*mask_dir.*masks_dir"
    ):  # named format: at load
        TrainConfig.from_dict({**config, "data": {**config["data"], "format": "masks"}})
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ConfigError, match="mask_dir"):  # detected format: when the data is read
        train_segmentation(TrainConfig.from_dict(config), progress=False)


def test_a_classifier_in_a_segmentation_config_is_a_config_error(tmp_path):
    config = TrainConfig.from_dict(
        {
            "task": "segmentation",
            "data": {"path": str(tmp_path)},
            "model": {"name": "small_cnn"},
            "out_dir": str(tmp_path / "run"),
        }
    )
    with pytest.raises(ConfigError, match="unet_lite0, unet_small"):
        train_segmentation(config, progress=False)
