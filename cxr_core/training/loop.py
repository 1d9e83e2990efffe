"""The training loop behind ``cxr train``: one code path for CPU, one GPU and ``torchrun``.

Per epoch: train (AMP on CUDA, gradient accumulation), predict the whole validation split,
log, keep the best model by the monitored metric (macro AUROC over classes with both
positives and negatives in validation for multilabel; balanced accuracy for multiclass),
and save everything needed to resume, atomically. At the end the best checkpoint is
evaluated on validation through :mod:`cxr_core.evaluation.run` (the same code as
``cxr evaluate``): thresholds are chosen there, and the card's validation numbers are the
ones written to ``eval/val/report.json``.

Reproducibility: seeds for torch/NumPy/Python, per-epoch sample order and augmentation
seeded from (seed, epoch, batch) (see :mod:`.sampling`), RNG states saved every epoch. On
the CPU, an interrupted run resumed with ``--resume`` ends with bit-identical weights to an
uninterrupted one. On CUDA, ``cudnn.benchmark`` picks the fastest (not bit-deterministic)
kernels, so runs agree to rounding only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from cxr_core.artifacts.run_dir import RunDir
from cxr_core.data.cache import ImageCache
from cxr_core.data.dataset import (
    AugmentConfig,
    CXRDataset,
    eval_transform,
    train_transform,
)
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.metrics import balanced_accuracy, roc_auc
from cxr_core.models import (
    apply_finetune,
    create_model,
    freeze_bn_stats,
    get_model_spec,
)
from cxr_core.models.card import ModelCard, software_versions
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.models.tta import activate
from cxr_core.training.config import TrainConfig
from cxr_core.training.data_setup import build_manifest, data_card, require_monitorable
from cxr_core.training.distributed import (
    DistContext,
    init_distributed,
    shutdown_distributed,
)
from cxr_core.training.losses import (
    build_loss,
    class_weights_from_labels,
    pos_weight_from_labels,
)
from cxr_core.training.sampling import EpochSampler, SeededItems, worker_init
from cxr_core.training.schedule import LRSchedule
from cxr_core.training.state import (
    capture_rng,
    load_train_state,
    restore_rng,
    save_train_state,
    seed_everything,
)
from cxr_core.utils.atomic import write_text_atomically

logger = logging.getLogger(__name__)



@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    monitor: str
    best_metric: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    completed: bool  # False when paused by stop_after_epochs: continue with resume=True
    wall_time_s: float
    report: dict | None  # validation report of the best model (rank 0 of a completed run only)


def monitor_name(multilabel: bool) -> str:
    return "val_macro_auroc" if multilabel else "val_balanced_accuracy"


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full float32."""
    if device.type != "cuda":
        if amp in ("auto", "off"):
            return None
        if amp == "bf16":
            return torch.bfloat16
        raise ConfigError("amp: fp16 needs a CUDA GPU; use auto, off or bf16 on the CPU")
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        if not torch.cuda.is_bf16_supported():
            raise ConfigError("amp: this GPU does not support bf16; use auto or fp16")
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_preprocess(config: TrainConfig) -> PreprocessConfig:
    spec = get_model_spec(config.model.name)
    return PreprocessConfig(
        cache_size=config.data.cache_size,
        input_size=config.preprocess.input_size,
        mean=tuple(config.preprocess.mean) if config.preprocess.mean else spec.input_mean,
        std=tuple(config.preprocess.std) if config.preprocess.std else spec.input_std,
        in_chans=config.model.in_chans,
    )


def _build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"model.finetune {config.model.finetune!r} leaves no trainable parameters")
    o = config.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "nadam":
        return torch.optim.NAdam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


class _EMA:
    """Exponential moving average of all floating-point weights and buffers (integers copied)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for shadow, current in zip(self.model.state_dict().values(), model.state_dict().values()):
            if shadow.is_floating_point():
                shadow.lerp_(current.detach(), 1.0 - self.decay)
            else:
                shadow.copy_(current)


def _monitored(multilabel: bool, labels: np.ndarray, probs: np.ndarray) -> tuple[float, dict]:
    """The model-selection metric and the per-class numbers logged with it."""
    auroc = roc_auc(labels, probs)
    extra: dict[str, Any] = {"val_auroc": {}}
    if multilabel:
        value = float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan")
        extra["val_macro_auroc"] = value
    else:
        known = ~np.isnan(labels).any(axis=1)
        truth = np.argmax(labels[known], axis=1)
        pred = np.argmax(probs[known], axis=1)
        value = float(balanced_accuracy(truth, pred, labels.shape[1]))
        extra["val_balanced_accuracy"] = value
        extra["val_accuracy"] = float(np.mean(truth == pred)) if truth.size else float("nan")
        extra["val_macro_auroc"] = float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan")
    extra["val_auroc"] = auroc
    return value, extra


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


class Trainer:
    """Holds the pieces of one run; :func:`train` is the public entry point."""

    def __init__(self, config: TrainConfig, ctx: DistContext, progress: bool) -> None:
        self.config = config
        self.ctx = ctx
        self.progress = progress and ctx.is_main
        self.out_dir = Path(config.out_dir)
        self.run_dir = RunDir(self.out_dir)
        self.device = ctx.device
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.channels_last = config.channels_last

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        c = self.config
        seed_everything(c.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.manifest = build_manifest(c.data)
        self.train_manifest = self.manifest.split("train")
        self.val_manifest = self.manifest.split("val")
        require_monitorable(self.val_manifest)
        self.label_space = self.manifest.label_space
        self.multilabel = self.label_space.multilabel
        self.preprocess = build_preprocess(c)
        self.cache = self._build_cache(self.manifest)

        aug = AugmentConfig.from_dict(c.augment)
        self.train_set = CXRDataset(self.train_manifest, self.cache, train_transform(self.preprocess, aug))
        self.val_set = CXRDataset(self.val_manifest, self.cache, eval_transform(self.preprocess))
        self.sampler = EpochSampler(len(self.train_set), seed=c.seed, rank=self.ctx.rank, world_size=self.ctx.world_size)
        cuda = self.device.type == "cuda"
        loader_kw: dict[str, Any] = {
            "num_workers": c.num_workers,
            "pin_memory": cuda,
            "worker_init_fn": worker_init,
            "persistent_workers": cuda and c.num_workers > 0,
        }
        self.train_loader = DataLoader(
            SeededItems(self.train_set, c.seed), batch_size=c.optim.batch_size, sampler=self.sampler,
            generator=torch.Generator().manual_seed(c.seed), **loader_kw,
        )
        self.val_loader = DataLoader(
            Subset(self.val_set, self.ctx.shard(len(self.val_set))), batch_size=c.eval.batch_size, shuffle=False, **loader_kw
        )

        torch.manual_seed(c.seed)  # identical initial weights on every rank and every run
        model = create_model(c.model.name, self.label_space.num_classes, weights=c.model.weights,
                             in_chans=c.model.in_chans, dropout=c.model.dropout)
        self.trainable = apply_finetune(model, c.model.name, c.model.finetune)
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = _EMA(model, c.ema.decay) if c.ema else None
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.ddp = model

        labels = self.train_manifest.labels()
        pos_weight = pos_weight_from_labels(labels) if (c.loss.pos_weight and self.multilabel) else None
        class_weight = (
            class_weights_from_labels(labels, self.label_space.num_classes)
            if (c.loss.class_weight and not self.multilabel) else None
        )
        kind = c.loss.kind if c.loss.kind != "auto" else ("bce" if self.multilabel else "ce")
        self.criterion = build_loss(self.label_space.task, kind, pos_weight=pos_weight, class_weight=class_weight).to(self.device)

        self.optimizer = _build_optimizer(c, model)
        steps_per_epoch = math.ceil(len(self.train_loader) / c.optim.grad_accum)
        self.schedule = LRSchedule(
            self.optimizer,
            kind=c.schedule.name,
            total_steps=steps_per_epoch * c.epochs,
            warmup_steps=round(c.schedule.warmup_epochs * steps_per_epoch),
            patience=c.schedule.patience,
            factor=c.schedule.factor,
            min_lr=c.schedule.min_lr,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.monitor = monitor_name(self.multilabel)
        self.start_epoch = 0
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.elapsed = 0.0
        self.history: list[dict] = []

    def _build_cache(self, manifest: Manifest) -> ImageCache:
        # Rank 0 decodes; the others wait and then find the finished cache by its key.
        cache_dir = self.config.data.cache_dir
        size = self.config.data.cache_size
        if self.ctx.is_main:
            cache = ImageCache.build(manifest, cache_dir, size, progress=self.progress)
        self.ctx.barrier()
        if not self.ctx.is_main:
            cache = ImageCache.build(manifest, cache_dir, size, progress=False)
        return cache

    # ------------------------------------------------------------------ resume
    def _state(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict() if self.ema else {},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "elapsed": self.elapsed,
            "world_size": self.ctx.world_size,
            "architecture": self.config.model.name,
            "classes": list(self.label_space.classes),
            "manifest_fingerprint": self.manifest.fingerprint(),
            "rng": capture_rng(),
        }

    def resume(self) -> None:
        state = load_train_state(self.out_dir, map_location=self.device)
        if state["architecture"] != self.config.model.name or list(state["classes"]) != list(self.label_space.classes):
            raise CheckpointError(
                f"cannot resume: {self.out_dir} holds a {state['architecture']} run over {state['classes']}, "
                f"but the config asks for {self.config.model.name} over {list(self.label_space.classes)}"
            )
        if state["manifest_fingerprint"] != self.manifest.fingerprint():
            raise CheckpointError(
                f"cannot resume: the dataset or its splits changed since the run in {self.out_dir} started "
                f"(manifest fingerprint {state['manifest_fingerprint']} then, {self.manifest.fingerprint()} now)"
            )
        self.model.load_state_dict(state["model"])
        if self.ema:
            if not state["ema"]:
                raise CheckpointError("cannot resume: the config enables ema but the interrupted run had none")
            self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.elapsed = float(state["elapsed"])
        if int(state["world_size"]) != self.ctx.world_size and self.ctx.is_main:
            logger.warning("resuming a %s-process run with %s processes; the sample order changes from here on",
                           state["world_size"], self.ctx.world_size)
        restore_rng(state["rng"])
        self.history = self._read_log(keep_before=self.start_epoch)

    def _read_log(self, keep_before: int) -> list[dict]:
        path = self.run_dir.training_log
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["epoch"] < keep_before]

    # ------------------------------------------------------------------ epochs
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        c = self.config
        self.sampler.set_epoch(epoch)
        self.ddp.train()
        freeze_bn_stats(self.model)
        accum = c.optim.grad_accum
        n_batches = len(self.train_loader)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = 0
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(self.train_loader, total=n_batches, desc=f"epoch {epoch + 1}/{c.epochs} train",
                   unit="batch", disable=not self.progress, leave=False)
        for step, (images, targets, _) in enumerate(bar):
            group_start = step - step % accum
            group_size = min(accum, n_batches - group_start)
            boundary = step + 1 == group_start + group_size
            images = self._to_device(images)
            targets = targets.to(self.device, non_blocking=True)
            sync = self.ddp.no_sync() if (self.ctx.enabled and not boundary) else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    logits = self.ddp(images)
                loss = self.criterion(logits.float(), targets)
                self.scaler.scale(loss / group_size).backward()
            if boundary:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                self.schedule.step_batch()
                if self.ema:
                    self.ema.update(self.model)
            loss_sum += loss.detach().double() * images.shape[0]
            seen += images.shape[0]
            if self.progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{self.schedule.lr:.2e}")
        bar.close()
        local = float(loss_sum) / max(seen, 1)
        if not math.isfinite(local):
            raise ConfigError(
                f"training loss became {local} in epoch {epoch + 1}; lower optim.lr or use amp: off"
            )
        return self.ctx.mean(local, seen), seen * self.ctx.world_size

    @torch.no_grad()
    def predict_val(self) -> tuple[np.ndarray, float]:
        """Probabilities for the whole validation split (row order of the val manifest) and the mean loss."""
        model = self.ema.model if self.ema else self.model
        model.eval()
        rows, outputs = [], []
        loss_sum, count = 0.0, 0
        for images, targets, index in tqdm(self.val_loader, desc="validation", unit="batch",
                                           disable=not self.progress, leave=False):
            with self._autocast():
                logits = model(self._to_device(images)).float()
            loss_sum += float(self.criterion(logits, targets.to(self.device))) * images.shape[0]
            count += images.shape[0]
            probs = activate(logits, self.multilabel)
            rows.append(index.numpy())
            outputs.append(probs.cpu().numpy())
        local = (
            np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
            np.concatenate(outputs) if outputs else np.zeros((0, self.label_space.num_classes), dtype=np.float32),
            loss_sum,
            count,
        )
        parts = self.ctx.all_gather_object(local)
        index = np.concatenate([p[0] for p in parts])
        probs = np.concatenate([p[1] for p in parts])
        total_loss = sum(p[2] for p in parts)
        total = sum(p[3] for p in parts)
        ordered = np.empty_like(probs)
        ordered[index] = probs
        return ordered, total_loss / max(total, 1)

    # ------------------------------------------------------------------ outputs
    def _card(self, epochs_run: int, stopped_early: bool, validation: dict) -> ModelCard:
        c = self.config
        return ModelCard(
            architecture=c.model.name,
            num_classes=self.label_space.num_classes,
            in_chans=c.model.in_chans,
            dropout=c.model.dropout,
            label_space=self.label_space.to_dict(),
            preprocess=self.preprocess.to_dict(),
            tta=c.eval.tta,
            training={
                "config": c.to_dict(),
                "epochs_run": epochs_run,
                "best_epoch": self.best_epoch + 1,
                "monitor": self.monitor,
                "best_metric": _finite_or_none(self.best_metric),
                "stopped_early": stopped_early,
                "wall_time_s": round(self.elapsed, 1),
                "device": str(self.device) if self.device.type == "cpu" else torch.cuda.get_device_name(self.device),
                "world_size": self.ctx.world_size,
                "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
                "trainable_parameters": self.trainable,
                "ema": c.ema is not None,
            },
            data=data_card(c.data, self.manifest),
            validation=validation,
            provenance=c.provenance or f"Trained with cxr_core on {self.manifest.source or c.data.path}.",
            **({"intended_use": c.intended_use} if c.intended_use else {}),
            versions=software_versions(),
        )

    def _weights(self) -> dict[str, torch.Tensor]:
        return (self.ema.model if self.ema else self.model).state_dict()

    def _log(self, row: dict) -> None:
        path = self.run_dir.training_log
        lines = [json.dumps(r, allow_nan=False) for r in (*self.history, row)]
        write_text_atomically(path, "\n".join(lines) + "\n")
        self.history.append(row)

    def run(self, resume: bool, stop_after_epochs: int | None = None) -> TrainResult:
        c = self.config
        if self.ctx.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif self.run_dir.state.exists():  # every rank checks, so all stop together
            raise ConfigError(
                f"{self.out_dir} already holds a training run; pass --resume to continue it or choose another --out"
            )
        if self.ctx.is_main:
            write_text_atomically(self.run_dir.config, c.to_yaml())
        stopped_early = False
        last_epoch = c.epochs if stop_after_epochs is None else min(c.epochs, self.start_epoch + stop_after_epochs)
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, last_epoch):
            started = time.perf_counter()
            train_loss, n_images = self.train_epoch(epoch)
            train_seconds = time.perf_counter() - started
            probs, val_loss = self.predict_val()
            value, extra = _monitored(self.multilabel, self.val_manifest.labels(), probs)
            self.schedule.step_epoch(value)
            improved = math.isfinite(value) and value > self.best_metric + c.early_stopping.min_delta
            if improved:
                self.best_metric, self.best_epoch, self.bad_epochs = value, epoch, 0
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - started
            self.elapsed += seconds
            if self.ctx.is_main:
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "monitor": self.monitor,
                    **{k: _finite_or_none(v) for k, v in extra.items() if k != "val_auroc"},
                    "val_auroc": {cls: _finite_or_none(a) for cls, a in zip(self.label_space.classes, extra["val_auroc"])},
                    "lr": self.schedule.lr,
                    "seconds": round(seconds, 2),
                    "images_per_s": round(n_images / train_seconds, 1) if train_seconds > 0 else None,
                    "best": improved,
                }
                card = self._card(epoch + 1, False, {"note": "provisional: epoch-level metrics; final numbers are written when training ends"})
                if improved:
                    save_checkpoint(self.run_dir.model, self._weights(), card, half=c.half_weights)
                save_checkpoint(self.run_dir.last, self._weights(), card)
                self._log(row)
                save_train_state(self.out_dir, self._state(epoch))
                if self.progress:
                    tqdm.write(
                        f"epoch {epoch + 1}/{c.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                        f"{self.monitor} {value:.4f}{' (best)' if improved else ''}, {seconds:.1f}s"
                    )
            self.ctx.barrier()
            patience = c.early_stopping.patience
            if patience is not None and self.bad_epochs >= patience:
                stopped_early = True
                break
        epochs_run = epoch + 1
        completed = stopped_early or epochs_run >= c.epochs
        report = self._finish(epochs_run, stopped_early) if (self.ctx.is_main and completed) else None
        self.ctx.barrier()
        return TrainResult(
            out_dir=self.out_dir,
            best_checkpoint=self.run_dir.model,
            last_checkpoint=self.run_dir.last,
            monitor=self.monitor,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch + 1,
            epochs_run=epochs_run,
            stopped_early=stopped_early,
            completed=completed,
            wall_time_s=self.elapsed,
            report=report,
        )

    def _finish(self, epochs_run: int, stopped_early: bool) -> dict:
        """Evaluate the best checkpoint on validation, pick thresholds, write the final card."""
        from cxr_core.evaluation.run import finalise_checkpoint

        c = self.config
        best = self.run_dir.model
        if not best.is_file():
            raise CheckpointError(
                f"no epoch produced a defined {self.monitor}, so no best model was saved in {self.out_dir}"
            )
        card = self._card(epochs_run, stopped_early, {})
        return finalise_checkpoint(
            best, card, self.val_manifest, self.cache, self.run_dir.eval_dir("val"),
            n_boot=c.eval.n_boot, seed=c.seed, batch_size=c.eval.batch_size,
            device=self.device, half=c.half_weights, progress=self.progress,
            operating_point=c.eval.operating_point,
        )


def train(
    config: TrainConfig, *, resume: bool = False, progress: bool = True, stop_after_epochs: int | None = None
) -> TrainResult:
    """Train as configured; ``resume=True`` continues exactly from ``out_dir/train_state.pt``.

    ``stop_after_epochs=N`` ends this call after N more epochs, leaving a resumable state
    (the schedule still spans ``config.epochs``): training in chunks on machines whose
    sessions are time-limited, and how the resume test simulates an interruption.
    """
    if stop_after_epochs is not None and stop_after_epochs < 1:
        raise ConfigError(f"stop_after_epochs must be >= 1, got {stop_after_epochs}")
    ctx = init_distributed(config.device)
    try:
        trainer = Trainer(config, ctx, progress)
        trainer.setup()
        return trainer.run(resume, stop_after_epochs)
    finally:
        shutdown_distributed(ctx)
