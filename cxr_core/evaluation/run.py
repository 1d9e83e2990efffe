"""Run a checkpoint over a manifest split and write what the dashboard reads.

``predict_split`` feeds the cached images through ``eval_transform`` of the checkpoint's own
preprocessing (the path the Predictor takes for an uploaded file), so the probability the
dashboard shows for an image equals the one in ``predictions.csv``. ``evaluate_checkpoint``
scores the predictions with :func:`cxr_core.metrics.evaluation_report` at the card's
thresholds, bootstrapping over patients, and writes ``predictions.csv`` + ``report.json``
atomically. Training ends by calling :func:`finalise_checkpoint`, which does the same for
the best model and writes the resulting headline numbers into its model card, so the card
and ``eval/val/report.json`` can never disagree.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from cxr_core.artifacts.run_dir import (
    PREDICTIONS_FILE,
    REPORT_FILE,
    label_column,
    prob_column,
    split_arrays,
)
from cxr_core.data.cache import ImageCache, cache_key
from cxr_core.data.dataset import CXRDataset, eval_transform
from cxr_core.data.labels import ClassMapping, match_classes
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.metrics import (
    DEFAULT_THRESHOLD,
    MAX_F1,
    bootstrap_cis,
    evaluation_report,
    format_report,
    select_thresholds,
    to_jsonable,
)
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cxr_core.models.tta import class_probabilities
from cxr_core.utils.atomic import write_atomically, write_text_atomically
from cxr_core.utils.device import resolve_device

logger = logging.getLogger(__name__)



def class_mapping(card: ModelCard, manifest: Manifest) -> ClassMapping:
    """The classes a model is scored on against a dataset: those the two share by harmonised name.

    A multilabel model trained on other labels (torchxrayvision's 18, CheXpert's 14) is scored
    on the overlap, the rest listed in the report; a multiclass model's softmax only means
    something over its own classes, so there both sides must name the same ones.
    """
    mapping = match_classes(card.classes, manifest.classes, what=f"the {card.architecture} model")
    if not card.get_label_space().multilabel and (mapping.model_only or mapping.data_only):
        raise DatasetError(
            f"the checkpoint predicts {list(card.classes)} but {manifest.source or 'the dataset'} "
            f"is labelled with {list(manifest.classes)}; evaluate a single-label model on data with the same label space"
        )
    return mapping


def card_on_classes(card: ModelCard, mapping: ClassMapping) -> ModelCard:
    """``card`` restricted to the shared classes, spelt as the dataset spells them, for scoring."""
    if mapping.identical:
        return card
    renamed = dict(mapping.shared)
    return replace(
        card,
        num_classes=len(mapping.shared),
        label_space={**card.label_space, "classes": list(mapping.data_classes)},
        thresholds={renamed[m]: t for m, t in card.thresholds.items() if m in renamed},
    )


@torch.no_grad()
def predict_split(
    checkpoint: Checkpoint | str | Path,
    manifest: Manifest,
    cache: ImageCache,
    *,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    num_workers: int = 0,
) -> pd.DataFrame:
    """One row per manifest row: ids, path, ``label:<class>`` (NaN unknown) and ``prob:<class>``
    for the classes model and data share (:func:`class_mapping`), named as the data names them.

    Probabilities are sigmoid outputs for multilabel models and softmax for multiclass ones,
    averaged over the card's test-time augmentation and computed in float32 (no autocast),
    exactly as the Predictor computes them.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    mapping = class_mapping(ckpt.card, manifest)
    dev = resolve_device(device)
    model = ckpt.build_model().to(dev).eval()
    dataset = CXRDataset(manifest, cache, eval_transform(ckpt.preprocess))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    multilabel = ckpt.label_space.multilabel
    chunks = []
    for images, _, _ in tqdm(loader, desc=f"predicting {len(dataset)} images", unit="batch", disable=not progress):
        with torch.inference_mode():
            probs = class_probabilities(model, images.to(dev), multilabel=multilabel, tta=ckpt.card.tta)
        chunks.append(probs.cpu().numpy())
    probs = np.concatenate(chunks).astype(np.float64)
    frame = manifest.frame[["image_id", "patient_id", "path"]].reset_index(drop=True).copy()
    labels = manifest.labels()
    for name in mapping.data_classes:
        frame[label_column(name)] = labels[:, manifest.classes.index(name)]
    for model_class, name in mapping.shared:
        frame[prob_column(name)] = probs[:, ckpt.card.classes.index(model_class)]
    return frame


def choose_thresholds(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str], multilabel: bool) -> tuple[dict[str, float], str, list[str]]:
    """Per-class max-F1 thresholds on validation (multilabel) or none (multiclass: argmax).

    Returns (thresholds, method, classes that fell back to 0.5 because max-F1 is undefined
    for them, i.e. no known positive in validation).
    """
    if not multilabel:
        return {}, "argmax", []
    chosen = select_thresholds(labels, probs, MAX_F1)
    fallback = [c for c, t in zip(class_names, chosen) if not np.isfinite(t)]
    thresholds = {c: (float(t) if np.isfinite(t) else DEFAULT_THRESHOLD) for c, t in zip(class_names, chosen)}
    return thresholds, MAX_F1, fallback


def headline(report: dict, labels: np.ndarray, probs: np.ndarray, groups: np.ndarray, *, n_boot: int, seed: int) -> dict:
    """The card's validation section: macro AUROC with a patient-level CI, per-class AUROC and counts.

    The macro CI averages, per bootstrap resample, the AUROC of the classes the report's
    macro includes (enough positives and negatives); resamples where one of them is
    undefined are skipped. They are the same resamples as the report's per-class intervals.
    """
    names = report["class_names"]
    macro = report["macro"]
    included = [names.index(c) for c in macro["classes_included"]]
    macro_ci = None
    if n_boot > 0 and included:
        dist = bootstrap_cis(labels[:, included], probs[:, included], ["auroc"], groups=groups,
                             n_boot=n_boot, seed=seed)["auroc"].distribution
        per_resample = dist[np.isfinite(dist).all(axis=1)].mean(axis=1)
        if per_resample.size:
            alpha = report["settings"]["alpha"]
            macro_ci = [float(np.quantile(per_resample, alpha / 2)), float(np.quantile(per_resample, 1 - alpha / 2))]
    out = {
        "n_images": report["n_cases"],
        "n_patients": int(len(set(groups.tolist()))),
        "macro_auroc": macro["auroc"],
        "macro_auroc_ci": macro_ci,
        "macro_classes_included": macro["classes_included"],
        "macro_classes_excluded": macro["classes_excluded"],
        "macro_exclusion_rule": macro["exclusion_rule"],
        "per_class": {
            name: {k: e[k] for k in ("auroc", "auroc_ci", "n_pos", "n_neg", "threshold", "sensitivity", "specificity")}
            for name, e in report["per_class"].items()
        },
        "n_boot": report["settings"]["n_boot"],
        "seed": report["settings"]["seed"],
        "bootstrap_unit": report["settings"]["bootstrap_unit"],
    }
    if "multiclass" in report:
        out["accuracy"] = report["multiclass"]["accuracy"]
        out["balanced_accuracy"] = report["multiclass"]["balanced_accuracy"]
    return to_jsonable(out)


def score_predictions(
    predictions: pd.DataFrame, card: ModelCard, *, n_boot: int, seed: int, thresholds: dict[str, float] | None = None
) -> dict:
    """Report (with a ``headline`` section) for predictions at the card's (or given) thresholds."""
    classes = list(card.classes)
    labels, probs = split_arrays(predictions, classes)
    groups = predictions["patient_id"].astype(str).to_numpy()
    chosen = card.thresholds if thresholds is None else thresholds
    vector = [float(chosen.get(c, DEFAULT_THRESHOLD)) for c in classes] if chosen else None
    task = card.label_space["task"]
    report = evaluation_report(labels, probs, classes, task, thresholds=vector, groups=groups, n_boot=n_boot, seed=seed)
    report["headline"] = headline(report, labels, probs, groups, n_boot=n_boot, seed=seed)
    return report


def write_evaluation(out_dir: str | Path, predictions: pd.DataFrame, report: dict) -> Path:
    out_dir = Path(out_dir)
    write_atomically(out_dir / PREDICTIONS_FILE, lambda tmp: predictions.to_csv(tmp, index=False))
    text = json.dumps(to_jsonable(report), indent=1, allow_nan=False)
    write_text_atomically(out_dir / REPORT_FILE, text)
    return out_dir


def finalise_checkpoint(
    best_path: Path,
    card: ModelCard,
    val_manifest: Manifest,
    cache: ImageCache,
    out_dir: Path,
    *,
    n_boot: int,
    seed: int,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    half: bool = False,
    progress: bool = True,
) -> dict:
    """End of training: evaluate the saved best weights on validation, choose thresholds there,
    and rewrite the checkpoint with the final card (same weights) plus ``eval/val``.

    The weights are read back from the file, so an fp16-stored model is scored as stored, and
    with the final card's test-time augmentation, so the card's numbers are what users get.
    """
    ckpt = load_checkpoint(best_path)
    ckpt.card = card
    predictions = predict_split(ckpt, val_manifest, cache, batch_size=batch_size, device=device, progress=progress)
    labels, probs = split_arrays(predictions, card.classes)
    thresholds, method, fallback = choose_thresholds(labels, probs, card.classes, card.get_label_space().multilabel)
    report = score_predictions(predictions, card, n_boot=n_boot, seed=seed, thresholds=thresholds)
    card.thresholds = thresholds
    card.threshold_method = method
    card.validation = {
        "split": "val",
        **report["headline"],
        "threshold_method": method,
        "threshold_fallback_classes": fallback,
        "manifest_fingerprint": card.data.get("manifest_fingerprint", ""),
    }
    report["evaluation"] = _evaluation_info(best_path, card, "val", val_manifest)
    save_checkpoint(best_path, ckpt.state_dict, card, half=half)
    write_evaluation(out_dir, predictions, report)
    logger.info("%s", format_report(report))
    return report


def _evaluation_info(checkpoint_path: Path, card: ModelCard, split: str, manifest: Manifest) -> dict:
    return {
        "checkpoint": str(checkpoint_path),
        "architecture": card.architecture,
        "split": split,
        "source": manifest.source,
        "manifest_fingerprint_of_split": manifest.fingerprint(),
        "thresholds": card.thresholds,
        "threshold_method": card.threshold_method,
        "tta": card.tta,
    }


def open_cache_for(manifest: Manifest, split_manifest: Manifest, cache_dir: str | Path, size: int, *, progress: bool = True) -> ImageCache:
    """The training run's cache of the whole manifest when it exists, else a cache of the split alone.

    Evaluating one split must not decode the whole dataset, but when training already did,
    its cache (found by key, see :mod:`cxr_core.data.cache`) is reused.
    """
    full_index = Path(cache_dir) / f"cache-{size}px-{cache_key(manifest, size)}.json"
    if full_index.is_file():
        try:
            return ImageCache.open(full_index)
        except DatasetError:
            pass  # damaged: fall through and build the split's own cache
    return ImageCache.build(split_manifest, cache_dir, size, progress=progress)


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    manifest: Manifest,
    split: str,
    out_dir: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cache_dir: str | Path = ".cxr_cache",
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> dict:
    """Predict ``split`` of ``manifest``, score it at the card's thresholds and write the report."""
    checkpoint_path = Path(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    mapping = class_mapping(ckpt.card, manifest)
    part = manifest.split(split)
    cache = open_cache_for(manifest, part, cache_dir, ckpt.preprocess.cache_size, progress=progress)
    predictions = predict_split(ckpt, part, cache, batch_size=batch_size, device=device, progress=progress)
    report = score_predictions(predictions, card_on_classes(ckpt.card, mapping), n_boot=n_boot, seed=seed)
    report["evaluation"] = _evaluation_info(checkpoint_path, ckpt.card, split, part)
    report["label_mapping"] = mapping.to_dict()
    write_evaluation(out_dir, predictions, report)
    return report
