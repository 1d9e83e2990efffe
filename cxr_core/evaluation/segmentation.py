"""Score a segmentation checkpoint on image+mask pairs and write its evaluation.

Writes ``eval/<split>/scores.csv`` (one row per image: Dice, IoU, HD95, predicted and reference
mask area fractions) and ``eval/<split>/report.json`` (means with patient-level bootstrap
intervals). Training ends with :func:`evaluate_segmentation_arrays` on its validation split, and
``cxr evaluate`` on a segmentation checkpoint runs :func:`evaluate_segmentation`, which re-reads
the pairs and scores the split recorded in the card, so both give the same numbers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_core.artifacts.run_dir import REPORT_FILE, SCORES_FILE, RunDir
from cxr_core.data.formats import load_mask_set
from cxr_core.data.formats.mask_set import MaskSet
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, DatasetError
from cxr_core.metrics.segmentation import per_image_scores, segmentation_summary
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import Checkpoint, load_checkpoint
from cxr_core.models.segmentation import predict_mask_probs
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.csv_safe import write_frame_csv
from cxr_core.utils.device import resolve_device
from cxr_core.utils.tasks import Task

logger = logging.getLogger(__name__)

SEGMENTATION_THRESHOLD = 0.5  # a pixel is lung when its probability is at least this
SPLIT_ALL = "all"


def is_segmentation_card(card: ModelCard) -> bool:
    return card.label_space.get("task") == Task.SEGMENTATION.value


def format_segmentation_report(report: dict) -> str:
    """The report as a few lines of text for the terminal."""
    lines = [
        f"{report.get('split', '')}: {report['n_images']} images, {report['n_patients']} patients; "
        f"95% CIs from {report['n_boot']} patient-level bootstrap resamples"
    ]
    for name, m in report["metrics"].items():
        unit = " px" if name == "hd95" else ""
        lines.append(
            f"  {name:5s} {m['mean']:.4f}{unit}  (95% CI {m['ci_low']:.4f}-{m['ci_high']:.4f}, n={m['n']})"
        )
    return "\n".join(lines)


def score_split(
    probs: np.ndarray,
    pairs: MaskSet,
    *,
    threshold: float = SEGMENTATION_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Per-image scores and the report of predicted probabilities against ``pairs.masks``."""
    pred = probs >= threshold
    scores = per_image_scores(pred, pairs.masks)
    frame = pd.DataFrame(
        {
            "image_id": list(pairs.ids),
            "patient_id": list(pairs.patients),
            **scores,
            "pred_fraction": pred.mean(axis=(1, 2)),
            "true_fraction": pairs.masks.mean(axis=(1, 2)),
        }
    )
    summary = segmentation_summary(scores, list(pairs.patients), n_boot=n_boot, seed=seed)
    report = {
        "task": Task.SEGMENTATION.value,
        "n_images": len(pairs),
        "n_patients": len(set(pairs.patients)),
        "threshold": threshold,
        "n_boot": n_boot,
        "alpha": 0.05,
        "bootstrap_unit": "patient",
        "metrics": {name: ci.to_dict() for name, ci in summary.items()},
        "hd95_unit": "pixels at the mask resolution",
        "mask_size": int(pairs.masks.shape[-1]),
    }
    return frame, report


def write_split(folder: str | Path, frame: pd.DataFrame, report: dict) -> Path:
    """``scores.csv`` + ``report.json`` into ``folder``, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_frame_csv(frame, folder / SCORES_FILE)
    write_text_atomically(folder / REPORT_FILE, json.dumps(report, indent=2, allow_nan=True))
    return folder


def evaluate_segmentation(
    checkpoint: str | Path | Checkpoint,
    *,
    data: str | Path | None = None,
    split: str = "val",
    n_boot: int = 1000,
    device: str = "auto",
    out_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Score ``checkpoint`` on its recorded ``split`` (``val``/``train``) or on ``all`` pairs.

    ``data`` overrides the image+mask folder recorded in the card (a moved dataset). Results go
    to ``out_dir`` (default: ``eval/<split>/`` in the checkpoint's folder).
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if not is_segmentation_card(ckpt.card):
        raise CheckpointError(
            f"{ckpt.path} is not a segmentation model (task {ckpt.card.label_space.get('task')!r})"
        )
    card_data = ckpt.card.data
    root = Path(data) if data is not None else Path(card_data.get("path", ""))
    if not root.exists():
        raise DatasetError(
            f"the image+mask dataset {root} the model was trained on is not there; pass --data "
            "<its folder (e.g. with images/ and masks/) or label file>"
        )
    trained = ckpt.card.training.get("config", {}).get("data", {})
    # A moved dataset (``data``) is still the format the model was trained on; cards written
    # before the format registry read image+mask folders.
    fmt, adapter = card_data.get("format", "masks"), trained.get("adapter", {})
    preprocess = ckpt.preprocess
    pairs = load_mask_set(root, fmt, size=preprocess.cache_size, **adapter)
    if split != SPLIT_ALL:
        wanted = card_data.get(f"{split}_ids")
        if not wanted:
            raise DatasetError(
                f"the model card records no {split!r} split; use --split all or one of: train, val"
            )
        index = {name: i for i, name in enumerate(pairs.ids)}
        missing = [w for w in wanted if w not in index]
        if missing:
            raise DatasetError(
                f"{len(missing)} image(s) of the {split} split are not in {root} (e.g. {missing[0]}); "
                "evaluate with --split all or restore the dataset"
            )
        pairs = pairs.subset([index[w] for w in wanted])
    model = ckpt.build_model().to(resolve_device(device))
    probs = predict_mask_probs(model, pairs.images, preprocess)
    frame, report = score_split(
        probs, pairs, n_boot=n_boot, seed=int(ckpt.card.training.get("seed", 0))
    )
    report.update({"split": split, "checkpoint": str(ckpt.path), "data": str(root)})
    folder = (
        Path(out_dir) if out_dir is not None else RunDir.of_checkpoint(ckpt.path).eval_dir(split)
    )
    write_split(folder, frame, report)
    logger.info(
        "segmentation evaluation of %s on %s (%d images) written to %s",
        ckpt.path,
        split,
        len(pairs),
        folder,
    )
    return frame, report


def evaluate_model_arrays(
    model: torch.nn.Module,
    preprocess: PreprocessConfig,
    pairs: MaskSet,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Score an in-memory model on ``pairs`` (training's per-epoch and final validation)."""
    probs = predict_mask_probs(model, pairs.images, preprocess)
    return score_split(probs, pairs, n_boot=n_boot, seed=seed)
