"""The classification task: a manifest's images through the image cache, one logit per class.

Model selection monitors macro AUROC over the classes with both positives and negatives in
validation (multilabel) or balanced accuracy (multiclass). At the end the best checkpoint is
evaluated on validation through :mod:`cxr_core.evaluation.run` (the same code as ``cxr
evaluate``): thresholds are chosen there, and the card's validation numbers are the ones
written to ``eval/val/report.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.artifacts.run_dir import RunDir
from cxr_core.data.cache import ImageCache
from cxr_core.data.dataset import AugmentConfig, CXRDataset, eval_transform, train_transform
from cxr_core.data.manifest import Manifest
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.evaluation.run import finalise_checkpoint
from cxr_core.metrics import balanced_accuracy, roc_auc
from cxr_core.metrics.report_types import EvaluationReport
from cxr_core.models import get_model_spec, list_models
from cxr_core.models.card import ModelCard, software_versions
from cxr_core.models.lung_mask import LungMasker
from cxr_core.models.tta import activate
from cxr_core.training.config import TASK_CLASSIFICATION, DataConfig, TrainConfig
from cxr_core.training.data_setup import build_manifest, data_card, require_monitorable
from cxr_core.training.inputs import build_preprocess
from cxr_core.training.losses import build_loss, class_weights_from_labels, pos_weight_from_labels
from cxr_core.training.runtime import Runtime
from cxr_core.training.task import TrainingTask, Validation, finite_or_none, register_task
from cxr_core.utils.distributed import reassemble

logger = logging.getLogger(__name__)


def monitor_name(multilabel: bool) -> str:
    return "val_macro_auroc" if multilabel else "val_balanced_accuracy"


def monitored(multilabel: bool, labels: np.ndarray, probs: np.ndarray) -> tuple[float, dict]:
    """The model-selection metric and the numbers logged with it (per-class AUROC last)."""
    auroc = roc_auc(labels, probs)
    macro = float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan")
    if multilabel:
        return macro, {"val_macro_auroc": macro, "val_auroc": auroc}
    known = ~np.isnan(labels).any(axis=1)
    truth = np.argmax(labels[known], axis=1)
    pred = np.argmax(probs[known], axis=1)
    value = float(balanced_accuracy(truth, pred, labels.shape[1]))
    return value, {
        "val_balanced_accuracy": value,
        "val_accuracy": float(np.mean(truth == pred)) if truth.size else float("nan"),
        "val_macro_auroc": macro,
        "val_auroc": auroc,
    }


def build_cache_in_turn(
    runtime: Runtime, manifest: Manifest, data: DataConfig, masker: LungMasker | None
) -> ImageCache:
    """Rank 0 decodes; then the first process of every other node, which finds that cache when
    ``cache_dir`` is shared and builds its own when it is node-local; then everyone else.
    Each step waits for the one before, so no two processes of a node ever build the same cache.
    With ``masker`` (``preprocess.lung_mask``) the cache holds the lung-masked images."""
    ctx = runtime.ctx

    def build(progress: bool) -> ImageCache:
        return ImageCache.build(
            manifest, data.cache_dir, data.cache_size, progress=progress, transform=masker
        )

    if ctx.is_main:
        cache = build(runtime.progress)
    ctx.barrier()
    if ctx.local_rank == 0 and not ctx.is_main:
        cache = build(False)
    ctx.barrier()
    if ctx.local_rank != 0:
        cache = build(False)
    return cache


@register_task(TASK_CLASSIFICATION)
class ClassificationTask(TrainingTask):
    """Multilabel or multiclass classification of a manifest (class folders, NIH, CheXpert...)."""

    def __init__(self, config: TrainConfig, runtime: Runtime) -> None:
        super().__init__(config, runtime)
        if get_model_spec(config.model.name).segmentation:
            raise ConfigError(
                f"model.name: {config.model.name} draws masks; set task: segmentation or pick a classifier "
                f"({', '.join(list_models())})"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.label_space.classes)

    @property
    def multilabel(self) -> bool:
        return self.label_space.multilabel

    @property
    def monitor(self) -> str:  # type: ignore[override]  # known once the data is read
        return monitor_name(self.multilabel)

    def prepare(self) -> Dataset:
        c, ctx = self.config, self.runtime.ctx
        self.preprocess = build_preprocess(c)
        self.manifest = build_manifest(c.data)
        train_manifest = self.manifest.split("train")
        self.val_manifest = self.manifest.split("val")
        require_monitorable(self.val_manifest)
        self.label_space = self.manifest.label_space
        masker = lung_masker_for(self.preprocess, self.runtime.device)
        self.cache = build_cache_in_turn(self.runtime, self.manifest, c.data, masker)
        aug = AugmentConfig.from_dict(c.augment)
        train_set = CXRDataset(train_manifest, self.cache, train_transform(self.preprocess, aug))
        val_set = CXRDataset(self.val_manifest, self.cache, eval_transform(self.preprocess))
        self.train_labels = train_manifest.labels()
        self.val_loader = self.runtime.loader(
            Subset(val_set, ctx.shard(len(val_set))), batch_size=c.eval.batch_size, shuffle=False
        )
        return train_set

    def loss(self) -> nn.Module:
        c, labels = self.config.loss, self.train_labels
        pos_weight = pos_weight_from_labels(labels) if (c.pos_weight and self.multilabel) else None
        class_weight = (
            class_weights_from_labels(labels, len(self.classes))
            if (c.class_weight and not self.multilabel)
            else None
        )
        kind = c.kind if c.kind != "auto" else ("bce" if self.multilabel else "ce")
        return build_loss(
            self.label_space.task, kind, pos_weight=pos_weight, class_weight=class_weight
        )

    def predict(self, model: nn.Module, loss: nn.Module) -> tuple[np.ndarray, float]:
        """Probabilities for the whole validation split (row order of the val manifest) and the
        mean loss, each process predicting its shard."""
        rt = self.runtime
        rows, outputs = [], []
        loss_sum, count = 0.0, 0
        for images, targets, index in rt.progress_bar(self.val_loader, "validation"):
            with rt.autocast():
                logits = model(rt.to_device(images)).float()
            loss_sum += (
                loss(logits, targets.to(rt.device, non_blocking=True)).double() * images.shape[0]
            )
            count += images.shape[0]
            rows.append(index.numpy())
            outputs.append(activate(logits, self.multilabel).to("cpu", non_blocking=True))
        rt.synchronize()  # the non-blocking copies above have landed
        local = (
            np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
            torch.cat(outputs).numpy()
            if outputs
            else np.zeros((0, len(self.classes)), dtype=np.float32),
            float(loss_sum),
            count,
        )
        parts = rt.ctx.all_gather_object(local)
        probs = reassemble([(p[0], p[1]) for p in parts])
        return probs, sum(p[2] for p in parts) / max(sum(p[3] for p in parts), 1)

    def validate(self, model: nn.Module, loss: nn.Module) -> Validation:
        probs, val_loss = self.predict(model, loss)
        value, extra = monitored(self.multilabel, self.val_manifest.labels(), probs)
        auroc = extra.pop("val_auroc")
        fields: dict[str, Any] = {
            "val_loss": val_loss,
            "monitor": self.monitor,
            **{k: finite_or_none(v) for k, v in extra.items()},
            "val_auroc": {c: finite_or_none(a) for c, a in zip(self.classes, auroc)},
        }
        return Validation(value, fields, summary=f"val loss {val_loss:.4f}")

    def card(self, training: dict, validation: dict) -> ModelCard:
        c = self.config
        return ModelCard(
            architecture=c.model.name,
            num_classes=len(self.classes),
            in_chans=c.model.in_chans,
            dropout=c.model.dropout,
            label_space=self.label_space.to_dict(),
            preprocess=self.preprocess.to_dict(),
            tta=c.eval.tta,
            training=training,
            data=data_card(c.data, self.manifest),
            validation=validation,
            provenance=c.provenance
            or f"Trained with cxr_core on {self.manifest.source or c.data.path}.",
            **({"intended_use": c.intended_use} if c.intended_use else {}),
            versions=software_versions(),
        )

    def finalise(self, best: Path, training: dict) -> EvaluationReport:
        """Calibrate, choose thresholds on validation and write the final card and ``eval/val``."""
        c = self.config
        return finalise_checkpoint(
            best,
            self.card(training, {}),
            self.val_manifest,
            self.cache,
            RunDir(Path(c.out_dir)).eval_dir("val"),
            n_boot=c.eval.n_boot,
            seed=c.seed,
            batch_size=c.eval.batch_size,
            device=self.runtime.device,
            half=c.half_weights,
            progress=self.runtime.progress,
            operating_point=c.eval.operating_point,
        )

    def fingerprint(self) -> str:
        return self.manifest.fingerprint()

    def _lung_mask(self) -> str:
        return self.preprocess.lung_mask.identity() if self.preprocess.lung_mask else ""

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "lung_mask": self._lung_mask()}

    def check_resume(self, state: dict, out_dir: Path) -> None:
        super().check_resume(state, out_dir)
        then, now = state.get("lung_mask", ""), self._lung_mask()
        if then != now:

            def said(identity: str) -> str:
                return f"lung masking ({identity})" if identity else "no lung masking"

            raise CheckpointError(
                f"cannot resume: the run in {out_dir} started with {said(then)}, but the config asks for "
                f"{said(now)}; the training images would change mid-run. Restore the preprocess settings "
                "(and lung model) of that run, or start a new run"
            )
