"""The segmentation task on the engine: paired augmentation, the loss, the patient split, a run
that ``cxr evaluate`` reproduces, exact resume (also after SIGKILL), AMP and two processes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cxr_core.cli.main import main
from cxr_core.data.dataset import AugmentConfig
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.evaluation.segmentation import evaluate_segmentation
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.training import train
from cxr_core.training.config import TrainConfig
from cxr_core.training.losses import DiceBCELoss
from cxr_core.training.segmentation import PairAugment, split_by_patient

GRAY = PreprocessConfig(
    cache_size=64, input_size=48, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), in_chans=1
)


def test_augmentation_moves_image_and_mask_together(make_blob_pairs):
    torch.manual_seed(0)
    images, masks = make_blob_pairs(16)
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


def test_segmentation_config_rejects_a_classification_loss_and_an_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="loss.kind"):
        TrainConfig.from_dict(
            {"task": "segmentation", "data": {"path": "x"}, "loss": {"kind": "ce"}}
        )
    config = TrainConfig.from_dict({"task": "detection", "data": {"path": str(tmp_path)}})
    with pytest.raises(ConfigError, match="task: must be one of classification, segmentation"):
        train(config, progress=False)


def _log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "training_log.jsonl").read_text().splitlines()]


def test_segmentation_training_writes_a_checkpoint_that_evaluate_reproduces(
    mask_folders, tmp_path, make_segmentation_config
):
    config = make_segmentation_config(mask_folders, tmp_path / "run")
    result = train(config, progress=False)
    log = _log(tmp_path / "run")
    assert [row["epoch"] for row in log] == [0, 1]
    assert {"monitor", "val_dice", "val_iou", "val_hd95", "train_loss", "lr", "best"} <= set(log[0])
    card = load_checkpoint(result.best_checkpoint).card
    assert card.label_space["task"] == "segmentation" and card.classes == ("lung",)
    assert card.training["monitor"] == "val_dice" and card.training["seed"] == 0
    assert len(card.data["val_ids"]) == 3 and not set(card.data["val_ids"]) & set(
        card.data["train_ids"]
    )
    assert 0.0 < card.data["mask_fraction"]["min"] <= card.data["mask_fraction"]["max"] < 1.0
    shipped = json.loads((tmp_path / "run" / "eval" / "val" / "report.json").read_text())
    assert card.validation["dice"] == shipped["metrics"]["dice"]
    assert "validation Dice" in result.headline
    frame, report = evaluate_segmentation(
        result.best_checkpoint, out_dir=tmp_path / "again", n_boot=100
    )
    assert list(frame["image_id"]) == card.data["val_ids"]
    for metric in ("dice", "iou", "hd95"):
        assert report["metrics"][metric] == pytest.approx(shipped["metrics"][metric])
    # the log's epoch-level Dice of the best epoch is the final evaluation's point estimate
    best = max(log, key=lambda row: row["val_dice"])
    assert result.best_metric == pytest.approx(best["val_dice"])
    assert shipped["metrics"]["dice"]["mean"] == pytest.approx(best["val_dice"], abs=1e-9)
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


def _same_weights(a_dir, b_dir) -> None:
    for name in ("last.safetensors", "model.safetensors"):
        a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"


def test_segmentation_resume_is_bit_identical_to_uninterrupted_run(
    mask_folders, tmp_path, make_segmentation_config
):
    # Dropout, augmentation, cosine warm-up and EMA all draw on state that must survive the restart.
    settings = dict(
        model__dropout=0.2, schedule__name="cosine", schedule__warmup_epochs=0.5, ema__decay=0.9
    )
    straight = make_segmentation_config(mask_folders, tmp_path / "straight", **settings)
    chunked = make_segmentation_config(mask_folders, tmp_path / "chunked", **settings)
    full = train(straight, progress=False)
    paused = train(chunked, progress=False, stop_after_epochs=1)
    assert not paused.completed and paused.report is None
    resumed = train(chunked, resume=True, progress=False)
    assert full.completed and resumed.completed and resumed.epochs_run == 2
    _same_weights(tmp_path / "straight", tmp_path / "chunked")
    strip = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for r in _log(tmp_path / "straight")
    ]
    again = [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}
        for r in _log(tmp_path / "chunked")
    ]
    assert strip == again
    assert resumed.report["metrics"] == full.report["metrics"]


@pytest.mark.slow  # three processes: ~40 s of CPU
def test_segmentation_resume_after_sigkill_is_bit_identical(
    mask_folders, tmp_path, make_segmentation_config, killed_and_resumed
):
    settings = dict(epochs=3, model__dropout=0.2, ema__decay=0.9)
    straight = make_segmentation_config(mask_folders, tmp_path / "straight", **settings)
    killed = make_segmentation_config(mask_folders, tmp_path / "killed", **settings)
    train(straight, progress=False)
    resumed = killed_and_resumed(killed, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "best val_dice" in resumed.stdout and "validation Dice" in resumed.stdout
    _same_weights(tmp_path / "straight", tmp_path / "killed")
    assert [row["epoch"] for row in _log(tmp_path / "killed")] == [0, 1, 2]


def test_segmentation_resume_refuses_other_data(mask_folders, tmp_path, make_segmentation_config):
    config = make_segmentation_config(mask_folders, tmp_path / "run", epochs=1)
    train(config, progress=False)
    other = make_segmentation_config(mask_folders, tmp_path / "run", epochs=2, data__split_seed=3)
    with pytest.raises(CheckpointError, match="fingerprint"):
        train(other, resume=True, progress=False)


def test_segmentation_trains_under_bf16_autocast(mask_folders, tmp_path, make_segmentation_config):
    config = make_segmentation_config(mask_folders, tmp_path / "run", epochs=1, amp="bf16")
    result = train(config, progress=False)
    card = load_checkpoint(result.best_checkpoint).card
    assert card.training["amp"] == "bfloat16"
    assert np.isfinite(_log(tmp_path / "run")[0]["train_loss"])
    assert 0.0 <= result.report["metrics"]["dice"]["mean"] <= 1.0


def test_an_unknown_adapter_option_is_a_config_error(tmp_path):
    config = {
        "task": "segmentation",
        "data": {"path": str(tmp_path), "adapter": {"mask_dir": "m"}},
        "model": {"name": "unet_small"},
        "out_dir": str(tmp_path / "run"),
        "device": "cpu",
    }
    with pytest.raises(
        ConfigError, match="data.adapter.*mask_dir.*masks_dir"
    ):  # named format: at load
        TrainConfig.from_dict({**config, "data": {**config["data"], "format": "masks"}})
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ConfigError, match="mask_dir"):  # detected format: when the data is read
        train(TrainConfig.from_dict(config), progress=False)


def test_a_model_of_the_other_task_is_a_config_error(tmp_path):
    config = TrainConfig.from_dict(
        {
            "task": "segmentation",
            "data": {"path": str(tmp_path)},
            "model": {"name": "small_cnn"},
            "out_dir": str(tmp_path / "run"),
            "device": "cpu",
        }
    )
    with pytest.raises(ConfigError, match="unet_lite0, unet_small"):
        train(config, progress=False)
    config = TrainConfig.from_dict(
        {"data": {"path": str(tmp_path)}, "model": {"name": "unet_small"}, "device": "cpu"}
    )
    with pytest.raises(ConfigError, match="draws masks; set task: segmentation"):
        train(config, progress=False)
