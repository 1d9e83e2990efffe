"""From a data config to a split manifest, the same way for ``cxr train`` and ``cxr evaluate``.

The model card stores the data section of the training config and the manifest fingerprint;
:func:`build_manifest` is the one function both commands call, so ``cxr evaluate`` rebuilds
exactly the validation split the card's numbers were measured on (and says so loudly when
the data on disk has changed since).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxr_core.data.formats import load_dataset
from cxr_core.data.manifest import SPLITS, Manifest, select_classes, select_views
from cxr_core.data.merge import merge_manifests, per_source_counts
from cxr_core.data.splits import assign_splits, check_leakage
from cxr_core.errors import ConfigError, DatasetError
from cxr_core.inference.gate import training_age_range
from cxr_core.training.config import DataConfig

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cxr_core.models.card import ModelCard


def load_configured(data: DataConfig) -> Manifest:
    """The dataset (or the merged ``sources``) a data section names, with its ``views`` filter."""
    if data.sources:
        manifests = [
            load_dataset(src["path"], fmt=src.get("format", "auto"), **src.get("adapter", {}))
            for src in data.sources
        ]
        names = [src.get("name") or Path(src["path"]).name.split(".")[0] for src in data.sources]
        manifest = merge_manifests(manifests, names)
        logger.info(
            "merged %s",
            "; ".join(f"{n}: {c['images']} images" for n, c in per_source_counts(manifest).items()),
        )
    else:
        manifest = load_dataset(data.path, fmt=data.format, **data.adapter)
    return select_views(manifest, data.views) if data.views else manifest


def build_manifest(data: DataConfig) -> Manifest:
    """Load the dataset, deal patient-level splits (seeded), refuse patient leakage, then keep
    ``data.classes``. The subset comes after the split, so a model trained on 6 of 14 findings is
    validated on the same patients as one trained on all 14, and evaluating a subset of a model's
    classes scores the images it was validated on."""
    manifest = load_configured(data)
    manifest = assign_splits(
        manifest, val=data.val, test=data.test, seed=data.split_seed, keep_existing=data.keep_splits
    )
    check_leakage(manifest)
    if data.classes:
        manifest = select_classes(manifest, data.classes)
    check_label_coverage(manifest)
    return manifest


def check_label_coverage(manifest: Manifest) -> None:
    """Refuse data a classifier cannot learn from; warn about classes training never shows.

    A folder set with a single class "trains" to a perfect validation score (every image is
    that class), so fewer than two classes with images (multiclass), or no class with both
    positive and negative images (multilabel), is a DatasetError. A class with no training
    positives can only ever be guessed, which is worth a warning naming it.
    """
    labels = manifest.labels()
    classes = list(manifest.classes)
    positives = np.nansum(labels == 1, axis=0)
    if manifest.label_space.multilabel:
        usable = int((((labels == 1).sum(axis=0) > 0) & ((labels == 0).sum(axis=0) > 0)).sum())
        if usable == 0:
            raise DatasetError(
                f"{manifest.source or 'the dataset'}: no class has both positive and negative images, "
                "so there is nothing to learn; check the labels"
            )
    elif int((positives > 0).sum()) < 2:
        present = [c for c, n in zip(classes, positives) if n > 0]
        raise DatasetError(
            f"{manifest.source or 'the dataset'} has images of {len(present)} class(es) only "
            f"({', '.join(present) or 'none'}); "
            "a classifier needs at least two classes with images. Add the other class folder(s)."
        )
    train = manifest.frame["split"].to_numpy() == "train"
    if train.any():
        missing = [c for c, n in zip(classes, (labels[train] == 1).sum(axis=0)) if n == 0]
        if missing:
            elsewhere = {c: int(n) for c, n in zip(classes, positives) if c in missing}
            logger.warning(
                "No training images of %s (%s image(s) in the other splits): the model cannot learn "
                "these classes and will only guess them.",
                ", ".join(missing),
                ", ".join(f"{c}: {n}" for c, n in elsewhere.items()),
            )


def data_config_of(
    card: ModelCard,
    *,
    checkpoint: str | Path,
    path: str | None = None,
    fmt: str | None = None,
    cache_dir: str | None = None,
) -> DataConfig:
    """The data section a model was trained with, found again from where the checkpoint is now.

    Cards store absolute paths, which break when a project is cloned or moved together with
    the data beside it (a fresh clone next to ``../shared``, the bundled models). When the
    stored data folder is gone, it is looked for at the same place relative to the checkpoint
    as at training time, and the image cache follows it. ``path`` and ``cache_dir`` override.
    """
    stored = dict(card.training.get("config", {}).get("data", {}))
    try:
        data = DataConfig(**stored)
    except TypeError as exc:
        raise ConfigError(
            f"{checkpoint}: the data section of its model card is not understood ({exc})"
        ) from None
    if path is not None:
        data.path, data.sources = str(Path(path).resolve()), []
    elif data.path and not Path(data.path).exists():
        found = _moved_along(card, Path(checkpoint), data.path)
        if found is not None and found.exists():
            logger.warning(
                "The card's data %s is not here; using %s, where it sits relative to the "
                "checkpoint as when the model was trained.",
                data.path,
                found,
            )
            data.path = str(found)
            data.cache_dir = str(_moved_along(card, Path(checkpoint), data.cache_dir))
        else:
            raise DatasetError(
                f"{checkpoint} was validated on {data.path}, which is not on this machine (nor at the same place "
                "relative to the checkpoint); pass --data with the dataset's folder or label file"
            )
    if fmt is not None and fmt not in ("auto", data.format):
        data.format, data.adapter = fmt, {}
    if cache_dir is not None:
        data.cache_dir = cache_dir
    if not data.path and not data.sources:
        raise ConfigError(f"{checkpoint}: its model card names no dataset; pass --data")
    return data


def _moved_along(card: ModelCard, checkpoint: Path, stored: str) -> Path | None:
    """Where a training-time path is if it moved along with the checkpoint (None: not known)."""
    config = card.training.get("config", {})
    written_to = config.get("out_dir") or config.get("ensemble", {}).get(
        "out_dir"
    )  # a run's or an ensemble's
    if not written_to:
        return None
    return Path(os.path.normpath(checkpoint.resolve().parent / os.path.relpath(stored, written_to)))


def split_summary(manifest: Manifest) -> dict:
    """Counts, positives and prevalence per split and class, patients per split (for the card)."""
    out: dict = {}
    classes = list(manifest.classes)
    frame = manifest.frame
    for split in SPLITS:
        sub = frame[frame["split"] == split]
        if sub.empty:
            continue
        labels = sub[classes].to_numpy(dtype=np.float64)
        known = (~np.isnan(labels)).sum(axis=0)
        positives = np.nansum(labels, axis=0)
        out[split] = {
            "images": int(len(sub)),
            "patients": int(sub["patient_id"].nunique()),
            "positives": {c: int(p) for c, p in zip(classes, positives)},
            "known": {c: int(k) for c, k in zip(classes, known)},
            "prevalence": {
                c: (float(p / k) if k else None) for c, p, k in zip(classes, positives, known)
            },
        }
    return out


def data_card(data: DataConfig, manifest: Manifest) -> dict:
    sources = per_source_counts(manifest)
    return {
        **({"sources": sources} if sources else {}),
        "source": manifest.source or data.path,
        "path": data.path,
        "format": data.format,
        "adapter": dict(data.adapter),
        "split_rule": {
            "val": data.val,
            "test": data.test,
            "seed": data.split_seed,
            "keep_existing": data.keep_splits,
        },
        "manifest_fingerprint": manifest.fingerprint(),
        "label_space": manifest.label_space.to_dict(),
        "splits": split_summary(manifest),
        "age_range": training_age_range(_train_ages(manifest)),  # the input gate warns outside it
    }


def _train_ages(manifest: Manifest) -> np.ndarray:
    frame = manifest.frame
    if "age" not in frame:
        return np.array([])
    return frame.loc[frame["split"] == "train", "age"].to_numpy(dtype=np.float64)


def require_monitorable(val: Manifest) -> None:
    """Multilabel model selection needs a defined macro AUROC; say so before hours of training.

    (Multiclass balanced accuracy is defined for any non-empty split, which ``Manifest.split`` ensures.)
    """
    if not val.label_space.multilabel:
        return
    labels = val.labels()
    both = ((labels == 1).sum(axis=0) > 0) & ((labels == 0).sum(axis=0) > 0)
    if not both.any():
        raise DatasetError(
            f"the validation split ({len(val)} images) has no class with both positive and negative images, "
            "so macro AUROC is undefined and no best model can be chosen; raise data.val"
        )
