"""Training of segmentation models (lung masks): ``cxr train`` with ``task: segmentation``.

Kept apart from the classification loop (:mod:`cxr_core.training.loop`) because almost nothing
there applies: targets are masks, the augmentation must move image and mask together, the loss
is Dice + BCE and the monitored metric is validation Dice. It shares what does apply: the YAML
config, the learning-rate schedule, the seeding, the model registry, the checkpoint format and
the run-folder layout.

Segmentation sets are small (Montgomery: 138 pairs of 256 px, 18 MB), so all pairs live in
memory and batches are cut from them directly, without a DataLoader or the image cache.

The split is by patient: ``data.val`` of the patients, drawn with ``data.split_seed``, go to
validation; their ids are stored in the card so ``cxr evaluate`` re-scores exactly that split.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_core.artifacts.run_dir import RunDir
from cxr_core.data.dataset import AugmentConfig, TrainTransform
from cxr_core.data.formats import load_mask_set
from cxr_core.data.formats.masks import MaskSet
from cxr_core.data.preprocessing import PreprocessConfig, normalise
from cxr_core.errors import ConfigError, DatasetError
from cxr_core.evaluation.segmentation import (
    SEGMENTATION_THRESHOLD,
    evaluate_model_arrays,
    write_split,
)
from cxr_core.models.card import ModelCard, software_versions
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.models.registry import create_model, get_model_spec, list_models
from cxr_core.training.config import TrainConfig
from cxr_core.training.loop import build_preprocess
from cxr_core.training.losses import DiceBCELoss
from cxr_core.training.schedule import LRSchedule
from cxr_core.training.state import seed_everything
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.device import resolve_device
from cxr_core.utils.tasks import Task

logger = logging.getLogger(__name__)

LUNG_CLASS = "lung"
LABEL_SPACE_NAME = "lungs"
MONITOR = "val_dice"


@dataclass
class SegmentationResult:
    """What ``cxr train`` reports after a segmentation run."""

    out_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_metric: float
    epochs_run: int
    stopped_early: bool
    wall_time_s: float
    report: dict
    monitor: str = MONITOR
    completed: bool = True


def split_by_patient(
    patients: tuple[str, ...] | list[str], val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation images; all images of a patient on one side.

    ``round(val_fraction * patients)`` patients (at least one) are drawn without replacement
    with ``seed``; the result does not depend on the order of the images.
    """
    unique = sorted(set(patients))
    if len(unique) < 2:
        raise DatasetError(
            f"a patient-level validation split needs at least 2 patients, got {len(unique)}"
        )
    n_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    rng = np.random.default_rng(seed)
    val_patients = set(
        rng.choice(np.array(unique, dtype=object), size=n_val, replace=False).tolist()
    )
    is_val = np.array([p in val_patients for p in patients])
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


class PairAugment:
    """Random rotation + resized crop (+ flip) applied to an image and its mask with ONE grid.

    The geometry is :class:`cxr_core.data.dataset.TrainTransform`'s (same parameters, same
    ``grid_sample`` grid); the image is resampled bilinearly and jittered in brightness and
    contrast, the mask is resampled bilinearly and thresholded at 0.5, so a mask pixel lands
    where its image pixel lands.
    """

    def __init__(self, cfg: PreprocessConfig, aug: AugmentConfig) -> None:
        self.cfg = cfg
        self.transform = TrainTransform(cfg, aug)

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images and bool masks, (B, 1, H, W) each -> normalised input and 0/1 float masks (B, ·, S, S)."""
        batch, _, height, width = images.shape
        params = self.transform.sample_params(batch, height, width)
        grid = self.transform.sampling_grid(params, height, width)
        gray = F.grid_sample(
            images.to(torch.float32),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        moved = F.grid_sample(
            masks.to(torch.float32),
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        x = normalise(self.transform.photometric(gray, params), self.cfg)
        return x, (moved >= 0.5).to(torch.float32)


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    o = config.optim
    kind = {"adam": torch.optim.Adam, "nadam": torch.optim.NAdam, "adamw": torch.optim.AdamW}[
        o.name
    ]
    return kind(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def mask_fraction_range(masks: np.ndarray) -> dict[str, float]:
    """Share of the image inside the mask over a set of masks: min, 1st/50th/99th percentile, max.

    Stored in the card: the lung-area range the model has seen, which the input check of
    :mod:`cxr_core.inference.lungs` compares an uploaded film against.
    """
    fractions = np.asarray(masks, dtype=bool).mean(axis=(1, 2))
    p1, p50, p99 = np.percentile(fractions, [1, 50, 99])
    return {
        "min": float(fractions.min()),
        "p01": float(p1),
        "median": float(p50),
        "p99": float(p99),
        "max": float(fractions.max()),
    }


def _card(
    config: TrainConfig,
    preprocess: PreprocessConfig,
    pairs: MaskSet,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    training: dict,
    validation: dict,
) -> ModelCard:
    return ModelCard(
        architecture=config.model.name,
        num_classes=1,
        in_chans=config.model.in_chans,
        dropout=config.model.dropout,
        label_space={  # what the masks outline: the lungs, or a finding (SIIM-ACR: pneumothorax)
            "name": LABEL_SPACE_NAME if pairs.target == LUNG_CLASS else f"{pairs.target}_masks",
            "classes": [pairs.target],
            "task": Task.SEGMENTATION.value,
        },
        preprocess=preprocess.to_dict(),
        thresholds={pairs.target: SEGMENTATION_THRESHOLD},
        threshold_method="fixed 0.5 per pixel",
        training={"config": config.to_dict(), "seed": config.seed, **training},
        data={
            "path": config.data.path,
            "format": config.data.format,
            "n_images": len(pairs),
            "n_patients": len(set(pairs.patients)),
            "split": {"unit": "patient", "val": config.data.val, "seed": config.data.split_seed},
            "train_ids": [pairs.ids[i] for i in train_idx],
            "val_ids": [pairs.ids[i] for i in val_idx],
            "mask_fraction": mask_fraction_range(pairs.masks[train_idx]),
        },
        validation=validation,
        provenance=config.provenance or f"Trained with cxr_core on {config.data.path}.",
        **({"intended_use": config.intended_use} if config.intended_use else {}),
        versions=software_versions(),
    )


def train_segmentation(config: TrainConfig, *, progress: bool = True) -> SegmentationResult:
    """Train, keep the epoch with the best validation Dice, and write the run folder.

    The folder holds ``model.safetensors`` (best epoch, card with validation Dice/IoU/HD95 and
    their patient-level bootstrap intervals), ``training_log.jsonl``, ``config.yaml`` and
    ``eval/val/{scores.csv, report.json}``.
    """
    started = time.perf_counter()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    run = RunDir(Path(config.out_dir))
    run.path.mkdir(parents=True, exist_ok=True)
    write_text_atomically(run.config, config.to_yaml())

    if not get_model_spec(config.model.name).segmentation:
        raise ConfigError(
            f"model.name: {config.model.name} is a classifier; a segmentation config needs one of "
            f"{', '.join(list_models(segmentation=True))}"
        )
    pairs = load_mask_set(
        config.data.path, config.data.format, size=config.data.cache_size, **config.data.adapter
    )
    train_idx, val_idx = split_by_patient(pairs.patients, config.data.val, config.data.split_seed)
    train_pairs, val_pairs = pairs.subset(train_idx), pairs.subset(val_idx)
    logger.info(
        "%d training and %d validation pairs (patient-level split)",
        len(train_pairs),
        len(val_pairs),
    )

    preprocess = build_preprocess(config)
    augment = PairAugment(preprocess, AugmentConfig.from_dict(config.augment))
    model = create_model(
        config.model.name,
        1,
        weights=config.model.weights,
        in_chans=config.model.in_chans,
        dropout=config.model.dropout,
    ).to(device)
    optimizer = _optimizer(config, model)
    batch_size = config.optim.batch_size
    steps = math.ceil(len(train_pairs) / batch_size)
    schedule = LRSchedule(
        optimizer,
        kind=config.schedule.name,
        total_steps=steps * config.epochs,
        warmup_steps=round(config.schedule.warmup_epochs * steps),
        patience=config.schedule.patience,
        factor=config.schedule.factor,
        min_lr=config.schedule.min_lr,
    )
    loss_fn = DiceBCELoss()
    images = torch.from_numpy(train_pairs.images).unsqueeze(1)
    masks = torch.from_numpy(train_pairs.masks).unsqueeze(1)
    generator = torch.Generator().manual_seed(config.seed)

    history: list[dict] = []
    best_state, best_dice, best_epoch, bad_epochs, stopped_early = None, -math.inf, 0, 0, False
    patience = config.early_stopping.patience
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train_pairs), generator=generator)
        total, seen = 0.0, 0
        for first in range(0, len(order), batch_size):
            index = order[first : first + batch_size]
            x, y = augment(images[index], masks[index])
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step_batch()
            total += loss.item() * len(index)
            seen += len(index)
        _, report = evaluate_model_arrays(model, preprocess, val_pairs, n_boot=0)
        dice = report["metrics"]["dice"]["mean"]
        schedule.step_epoch(dice)
        row = {
            "epoch": epoch,
            "train_loss": total / seen,
            MONITOR: dice,
            "val_iou": report["metrics"]["iou"]["mean"],
            "val_hd95": report["metrics"]["hd95"]["mean"],
            "lr": schedule.lr,
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
        history.append(row)
        write_text_atomically(run.training_log, "\n".join(json.dumps(r) for r in history) + "\n")
        if progress:
            logger.info(
                "epoch %d/%d  loss %.4f  val Dice %.4f  IoU %.4f  HD95 %.2f px  (%.0f s)",
                epoch,
                config.epochs,
                row["train_loss"],
                dice,
                row["val_iou"],
                row["val_hd95"],
                row["elapsed_s"],
            )
        if dice > best_dice + config.early_stopping.min_delta:
            best_state, best_dice, best_epoch, bad_epochs = (
                copy.deepcopy(model.state_dict()),
                dice,
                epoch,
                0,
            )
        else:
            bad_epochs += 1
            if patience is not None and bad_epochs >= patience:
                stopped_early = True
                break

    model.load_state_dict(best_state)
    frame, report = evaluate_model_arrays(
        model, preprocess, val_pairs, n_boot=config.eval.n_boot, seed=config.seed
    )
    report.update({"split": "val", "checkpoint": str(run.model), "data": config.data.path})
    write_split(run.eval_dir("val"), frame, report)
    wall = time.perf_counter() - started
    training = {
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "monitor": MONITOR,
        "best_metric": best_dice,
        "stopped_early": stopped_early,
        "wall_time_s": round(wall, 1),
        "device": str(device),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "threads": torch.get_num_threads(),
    }
    validation = {
        "split": "val",
        **{name: m for name, m in report["metrics"].items()},
        "n_images": report["n_images"],
        "n_patients": report["n_patients"],
        "n_boot": report["n_boot"],
    }
    card = _card(config, preprocess, pairs, train_idx, val_idx, training, validation)
    save_checkpoint(run.model, model.state_dict(), card, half=config.half_weights)
    return SegmentationResult(
        out_dir=run.path,
        best_checkpoint=run.model,
        best_epoch=best_epoch,
        best_metric=best_dice,
        epochs_run=len(history),
        stopped_early=stopped_early,
        wall_time_s=wall,
        report=report,
    )
