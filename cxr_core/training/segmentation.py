"""The segmentation task (masks of the lungs, or of a finding): ``task: segmentation`` in a config.

What differs from classification: targets are masks, the augmentation moves image and mask
together (:class:`PairAugment`), the loss is Dice + BCE and the monitored metric is validation
Dice. Everything else (resume, AMP, DDP, EMA, schedule, early stopping, logs) is the engine's.

Segmentation sets are small (Montgomery: 138 pairs of 256 px, 18 MB), so all pairs live in
memory and batches are cut from them directly, without the image cache.

The split is by patient: ``data.val`` of the patients, drawn with ``data.split_seed``, go to
validation; their ids are stored in the card so ``cxr evaluate`` re-scores exactly that split.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from cxr_core.artifacts.run_dir import RunDir
from cxr_core.data.dataset import AugmentConfig, TrainTransform
from cxr_core.data.formats import load_mask_set
from cxr_core.data.formats.mask_set import MaskSet
from cxr_core.data.preprocessing import PreprocessConfig, normalise
from cxr_core.errors import ConfigError, DatasetError
from cxr_core.evaluation.segmentation import (
    SEGMENTATION_THRESHOLD,
    evaluate_model_arrays,
    score_split,
    write_split,
)
from cxr_core.models import get_model_spec, list_models
from cxr_core.models.card import ModelCard, software_versions
from cxr_core.models.checkpoint import load_checkpoint, save_checkpoint
from cxr_core.models.segmentation import predict_mask_probs
from cxr_core.training.config import TASK_SEGMENTATION, DataConfig, TrainConfig
from cxr_core.training.inputs import build_preprocess
from cxr_core.training.losses import DiceBCELoss
from cxr_core.training.runtime import Runtime
from cxr_core.training.task import TrainingTask, Validation, finite_or_none, register_task
from cxr_core.utils.distributed import reassemble
from cxr_core.utils.tasks import Task

logger = logging.getLogger(__name__)

LUNG_CLASS = "lung"
LABEL_SPACE_NAME = "lungs"
MONITOR = "val_dice"


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


class PairDataset(Dataset):
    """Training pairs as ``(input, mask, index)``, augmented a whole batch at a time."""

    def __init__(self, pairs: MaskSet, augment: PairAugment) -> None:
        self.images = torch.from_numpy(pairs.images).unsqueeze(1)
        self.masks = torch.from_numpy(pairs.masks).unsqueeze(1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        x, y = self.augment(self.images[index], self.masks[index])
        return [(x[k], y[k], int(i)) for k, i in enumerate(indices)]


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


def load_pairs(data: DataConfig) -> MaskSet:
    """The image+mask pairs a segmentation config names, at the cache size: any registered format
    with masks (``masks`` folders, SIIM-ACR, COVID-19 Radiography, NLM TB), its options checked."""
    return load_mask_set(data.path, data.format, size=data.cache_size, **data.adapter)


@register_task(TASK_SEGMENTATION)
class SegmentationTask(TrainingTask):
    """One logit map per image (what the masks outline: the lungs, or a finding such as SIIM-ACR's
    pneumothorax), trained on the image+mask pairs of any format with masks."""

    monitor = MONITOR

    def __init__(self, config: TrainConfig, runtime: Runtime) -> None:
        super().__init__(config, runtime)
        if not get_model_spec(config.model.name).segmentation:
            raise ConfigError(
                f"model.name: {config.model.name} is a classifier; a segmentation config needs one of "
                f"{', '.join(list_models(segmentation=True))}"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        return (self.pairs.target,)

    def prepare(self) -> Dataset:
        c = self.config
        self.preprocess = build_preprocess(c)
        self.pairs = load_pairs(c.data)
        self.train_idx, self.val_idx = split_by_patient(
            self.pairs.patients, c.data.val, c.data.split_seed
        )
        self.val_pairs = self.pairs.subset(self.val_idx)
        logger.info(
            "%d training and %d validation pairs (patient-level split)",
            len(self.train_idx),
            len(self.val_idx),
        )
        augment = PairAugment(self.preprocess, AugmentConfig.from_dict(c.augment))
        return PairDataset(self.pairs.subset(self.train_idx), augment)

    def loss(self) -> nn.Module:
        return DiceBCELoss()

    def validate(self, model: nn.Module, loss: nn.Module) -> Validation:
        """Dice, IoU and HD95 on validation, each process predicting its shard of the pairs."""
        rt = self.runtime
        shard = np.asarray(rt.ctx.shard(len(self.val_pairs)), dtype=np.int64)
        with rt.autocast():
            probs = predict_mask_probs(model, self.val_pairs.images[shard], self.preprocess)
        probs = reassemble(rt.ctx.all_gather_object((shard, probs)))
        _, report = score_split(probs, self.val_pairs, n_boot=0)
        dice, iou, hd95 = (report["metrics"][m]["mean"] for m in ("dice", "iou", "hd95"))
        fields = {
            "monitor": MONITOR,
            MONITOR: finite_or_none(dice),
            "val_iou": finite_or_none(iou),
            "val_hd95": finite_or_none(hd95),
        }
        return Validation(dice, fields, summary=f"IoU {iou:.4f}, HD95 {hd95:.2f} px")

    def card(self, training: dict, validation: dict) -> ModelCard:
        c, pairs = self.config, self.pairs
        return ModelCard(
            architecture=c.model.name,
            num_classes=1,
            in_chans=c.model.in_chans,
            dropout=c.model.dropout,
            label_space={  # what the masks outline: the lungs, or a finding (SIIM-ACR: pneumothorax)
                "name": LABEL_SPACE_NAME if pairs.target == LUNG_CLASS else f"{pairs.target}_masks",
                "classes": [pairs.target],
                "task": Task.SEGMENTATION.value,
            },
            preprocess=self.preprocess.to_dict(),
            thresholds={pairs.target: SEGMENTATION_THRESHOLD},
            threshold_method="fixed 0.5 per pixel",
            training={**training, "seed": c.seed, "threads": torch.get_num_threads()},
            data={
                "path": c.data.path,
                "format": c.data.format,
                "n_images": len(pairs),
                "n_patients": len(set(pairs.patients)),
                "split": {"unit": "patient", "val": c.data.val, "seed": c.data.split_seed},
                "train_ids": [pairs.ids[i] for i in self.train_idx],
                "val_ids": [pairs.ids[i] for i in self.val_idx],
                "mask_fraction": mask_fraction_range(pairs.masks[self.train_idx]),
            },
            validation=validation,
            provenance=c.provenance or f"Trained with cxr_core on {c.data.path}.",
            **({"intended_use": c.intended_use} if c.intended_use else {}),
            versions=software_versions(),
        )

    def finalise(self, best: Path, training: dict) -> dict:
        """Score the best checkpoint as stored (with bootstrap intervals) and write its final card.

        The card then holds validation Dice/IoU/HD95 with their patient-level intervals, and
        ``eval/val/{scores.csv, report.json}`` the same numbers per image.
        """
        c = self.config
        ckpt = load_checkpoint(best)
        model = ckpt.build_model().to(self.runtime.device)
        frame, report = evaluate_model_arrays(
            model, self.preprocess, self.val_pairs, n_boot=c.eval.n_boot, seed=c.seed
        )
        report.update({"split": "val", "checkpoint": str(best), "data": c.data.path})
        write_split(RunDir(Path(c.out_dir)).eval_dir("val"), frame, report)
        validation = {
            "split": "val",
            **report["metrics"],
            "n_images": report["n_images"],
            "n_patients": report["n_patients"],
            "n_boot": report["n_boot"],
        }
        save_checkpoint(best, ckpt.state_dict, self.card(training, validation), half=c.half_weights)
        return report

    def headline(self, report: dict) -> str:
        dice = report["metrics"]["dice"]
        return (
            f"validation Dice {dice['mean']:.4f} (95% CI {dice['ci_low']:.4f}-{dice['ci_high']:.4f}, "
            f"{report['n_patients']} patients)"
        )

    def fingerprint(self) -> str:
        """Pairs, patients, pixels and the validation split."""
        h = hashlib.sha256()
        h.update(json.dumps([self.pairs.ids, self.pairs.patients, self.val_idx.tolist()]).encode())
        h.update(self.pairs.images.tobytes())
        h.update(self.pairs.masks.tobytes())
        return h.hexdigest()[:16]
