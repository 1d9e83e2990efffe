"""The training loop behind ``cxr train``: one code path for CPU, one GPU and ``torchrun``.

Per epoch: train (AMP on CUDA, gradient accumulation), predict the whole validation split,
log, keep the best model by the monitored metric (macro AUROC over classes with both
positives and negatives in validation for multilabel; balanced accuracy for multiclass),
and save everything needed to resume, atomically. At the end the best checkpoint is
evaluated on validation through :mod:`cxr_core.evaluation.run` (the same code as
``cxr evaluate``): thresholds are chosen there, and the card's validation numbers are the
ones written to ``eval/val/report.json``.

Reproducibility: seeds for torch/NumPy/Python, per-epoch sample order and augmentation
seeded from (seed, epoch, batch) (see :mod:`.sampling`), every rank's RNG states (CPU, its
CUDA device, NumPy, Python) saved every epoch. On
the CPU, an interrupted run resumed with ``--resume`` ends with bit-identical weights to an
uninterrupted one. On CUDA, ``cudnn.benchmark`` picks the fastest (not bit-deterministic)
kernels, so runs agree to rounding only.

Batch size: ``optim.batch_size`` is per process; under ``torchrun`` with N processes a step
sees N times as many images at the same learning rate. ``optim.global_batch_size`` fixes
the images per optimizer step instead, whatever N; the global batch is logged and recorded
in the card either way.

Mixed precision: ``amp: auto`` is float32 on the CPU, bf16 on GPUs with native bf16
(compute capability 8.0 and up) and fp16 with a GradScaler on older GPUs, where bf16 is
emulated and slow. Under fp16 a batch whose loss overflows is skipped by the scaler and left
out of the epoch loss; only an epoch without a single finite batch stops the run.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from cxr_core.artifacts.lung_model import lung_mask_settings, lung_masker_for
from cxr_core.artifacts.run_dir import RunDir
from cxr_core.data.cache import ImageCache
from cxr_core.data.dataset import (
    AugmentConfig,
    CXRDataset,
    collate_batch,
    eval_transform,
    train_transform,
)
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, ConfigError, TrainingDivergedError
from cxr_core.metrics import balanced_accuracy, roc_auc
from cxr_core.models import (
    apply_finetune,
    create_model,
    freeze_bn_stats,
    get_model_spec,
)
from cxr_core.models.card import ModelCard, software_versions
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.models.lung_mask import LungMasker
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

MAX_AUTO_WORKERS = 8


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
    """The autocast dtype, or None for full float32.

    ``auto`` asks for bf16 only where the GPU computes it natively (compute capability 8.0:
    A100, RTX 30xx and later). ``torch.cuda.is_bf16_supported()`` is also true on V100 and T4,
    through emulation several times slower than fp16, so it cannot decide.
    """
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
    native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
    if amp == "bf16":
        if not native_bf16:
            logger.warning(
                "amp: bf16 on %s (compute capability %s) is emulated and slower than fp16; "
                "amp: auto would choose fp16",
                device,
                torch.cuda.get_device_capability(device),
            )
        return torch.bfloat16
    return torch.bfloat16 if native_bf16 else torch.float16


def process_batch_size(
    batch_size: int, grad_accum: int, global_batch_size: int | None, world_size: int
) -> int:
    """Images per process and forward pass, so that the optimizer step sees the intended batch.

    Without ``global_batch_size`` that is ``batch_size`` (the global batch then grows with the
    number of processes); with it, the global batch is split evenly or the config is refused,
    because a rounded split would silently train another recipe.
    """
    if global_batch_size is None:
        return batch_size
    shares = world_size * grad_accum
    if global_batch_size % shares:
        raise ConfigError(
            f"optim.global_batch_size {global_batch_size} does not split evenly over {world_size} process(es) x "
            f"grad_accum {grad_accum}; choose a multiple of {shares}"
        )
    return global_batch_size // shares


def loader_workers(setting: int | str, local_world_size: int) -> int:
    """DataLoader workers per process: the config's number, or for ``auto`` the CPU cores this
    process may use, shared with the other processes of its node and leaving one for the
    training loop itself (at most :data:`MAX_AUTO_WORKERS`; more only add memory)."""
    if setting != "auto":
        return int(setting)
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return max(0, min(MAX_AUTO_WORKERS, cores // max(local_world_size, 1) - 1))


def load_scaler_state(
    scaler: torch.amp.GradScaler, saved: dict, *, saved_amp: str, amp: str
) -> None:
    """Restore the fp16 loss scale when both runs use it; say what happens when they differ.

    A disabled scaler saves ``{}``, and an enabled one refuses ``{}``: resuming fp16 after bf16
    or float32 starts from a fresh scale, resuming anything else after fp16 drops the old one.
    """
    if scaler.is_enabled() and saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled():
        logger.warning(
            "resuming an amp %s run with amp %s: the fp16 loss scale starts afresh", saved_amp, amp
        )
    elif saved:
        logger.warning(
            "resuming an amp %s run with amp %s: its fp16 loss scale is no longer used",
            saved_amp,
            amp,
        )


def build_preprocess(config: TrainConfig) -> PreprocessConfig:
    """The card's preprocessing of a run; with ``preprocess.lung_mask``, the lung model is named
    by its weights checksum (``ConfigError`` when it is missing or not a segmentation model)."""
    spec = get_model_spec(config.model.name)
    p = config.preprocess
    return PreprocessConfig(
        cache_size=config.data.cache_size,
        input_size=p.input_size,
        mean=tuple(p.mean) if p.mean else spec.input_mean,
        std=tuple(p.std) if p.std else spec.input_std,
        in_chans=config.model.in_chans,
        lung_mask=lung_mask_settings(p.lung_checkpoint, p.lung_dilation) if p.lung_mask else None,
    )


def _build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            f"model.finetune {config.model.finetune!r} leaves no trainable parameters"
        )
    o = config.optim
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "nadam":
        return torch.optim.NAdam(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


class _EMA:
    """Exponential moving average of all floating-point weights and buffers (integers copied).

    The tensors are paired once and updated with one fused ``_foreach_lerp_`` per step: a
    Python loop over a few hundred tensors launches as many kernels, which dominates a step
    on a fast GPU. ``state_dict`` tensors share storage with the modules, and loading a state
    copies in place, so the pairs stay valid for the life of the run.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self._floats = (
            [s for s, _ in pairs if s.is_floating_point()],
            [c for s, c in pairs if s.is_floating_point()],
        )
        self._others = (
            [s for s, _ in pairs if not s.is_floating_point()],
            [c for s, c in pairs if not s.is_floating_point()],
        )

    @torch.no_grad()
    def update(self) -> None:
        if self._floats[0]:
            torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - self.decay)
        for shadow, current in zip(*self._others):
            shadow.copy_(current)


class _LossTally:
    """Sum of batch losses on the device (no host sync per step), leaving out non-finite ones.

    Reading a CUDA loss with ``float()`` every step stalls the GPU until it finishes; the
    tally is read once per epoch, after summing over ranks so every rank sees the same
    numbers and takes the same decision about them.
    """

    def __init__(self, device: torch.device) -> None:
        self.totals = torch.zeros(
            3, dtype=torch.float64, device=device
        )  # loss x images, images, non-finite batches

    def add(self, loss: torch.Tensor, images: int) -> None:
        loss = loss.detach().double()
        finite = torch.isfinite(loss)
        self.totals += torch.stack(
            [torch.where(finite, loss * images, 0.0), finite.double() * images, (~finite).double()]
        )

    def result(self, ctx: DistContext) -> tuple[float, int, int]:
        """(mean loss over finite batches of all ranks, their images, non-finite batches)."""
        loss_images, images, nonfinite = ctx.all_reduce_sum(self.totals.clone()).tolist()
        mean = loss_images / images if images else float("nan")
        return mean, int(images), int(nonfinite)


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
        extra["val_macro_auroc"] = (
            float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan")
        )
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
        self.preprocess = build_preprocess(c)
        self.manifest = build_manifest(c.data)
        self.train_manifest = self.manifest.split("train")
        self.val_manifest = self.manifest.split("val")
        require_monitorable(self.val_manifest)
        self.label_space = self.manifest.label_space
        self.multilabel = self.label_space.multilabel
        self.cache = self._build_cache(self.manifest, lung_masker_for(self.preprocess, self.device))

        aug = AugmentConfig.from_dict(c.augment)
        self.train_set = CXRDataset(
            self.train_manifest, self.cache, train_transform(self.preprocess, aug)
        )
        self.val_set = CXRDataset(self.val_manifest, self.cache, eval_transform(self.preprocess))
        self.sampler = EpochSampler(
            len(self.train_set), seed=c.seed, rank=self.ctx.rank, world_size=self.ctx.world_size
        )
        self.batch_size = process_batch_size(
            c.optim.batch_size, c.optim.grad_accum, c.optim.global_batch_size, self.ctx.world_size
        )
        self.global_batch_size = self.batch_size * c.optim.grad_accum * self.ctx.world_size
        if self.ctx.is_main:
            per_process = (
                "from optim.global_batch_size"
                if c.optim.global_batch_size
                else "optim.batch_size, per process"
            )
            (logger.warning if self.ctx.enabled and not c.optim.global_batch_size else logger.info)(
                "global batch %d images per optimizer step = %d per process (%s) x %d process(es) x grad_accum %d, "
                "at optim.lr %g as configured (not rescaled)",
                self.global_batch_size,
                self.batch_size,
                per_process,
                self.ctx.world_size,
                c.optim.grad_accum,
                c.optim.lr,
            )
        cuda = self.device.type == "cuda"
        workers = loader_workers(c.num_workers, self.ctx.local_world_size)
        loader_kw: dict[str, Any] = {
            "num_workers": workers,
            "pin_memory": cuda,
            "worker_init_fn": worker_init,
            "persistent_workers": cuda and workers > 0,
            "collate_fn": collate_batch,
        }
        self.train_loader = DataLoader(
            SeededItems(self.train_set, c.seed),
            batch_size=self.batch_size,
            sampler=self.sampler,
            generator=torch.Generator().manual_seed(c.seed),
            **loader_kw,
        )
        self.val_loader = DataLoader(
            Subset(self.val_set, self.ctx.shard(len(self.val_set))),
            batch_size=c.eval.batch_size,
            shuffle=False,
            **loader_kw,
        )

        torch.manual_seed(c.seed)  # identical initial weights on every rank and every run
        model = create_model(
            c.model.name,
            self.label_space.num_classes,
            weights=c.model.weights,
            in_chans=c.model.in_chans,
            dropout=c.model.dropout,
        )
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
        pos_weight = (
            pos_weight_from_labels(labels) if (c.loss.pos_weight and self.multilabel) else None
        )
        class_weight = (
            class_weights_from_labels(labels, self.label_space.num_classes)
            if (c.loss.class_weight and not self.multilabel)
            else None
        )
        kind = c.loss.kind if c.loss.kind != "auto" else ("bce" if self.multilabel else "ce")
        self.criterion = build_loss(
            self.label_space.task, kind, pos_weight=pos_weight, class_weight=class_weight
        ).to(self.device)

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
        self.nonfinite_batches = 0
        self.history: list[dict] = []

    def _build_cache(self, manifest: Manifest, masker: LungMasker | None) -> ImageCache:
        """Rank 0 decodes; then the first process of every other node, which finds that cache when
        ``cache_dir`` is shared and builds its own when it is node-local; then everyone else.
        Each step waits for the one before, so no two processes of a node ever build the same cache.
        With ``masker`` (``preprocess.lung_mask``) the cache holds the lung-masked images."""
        cache_dir = self.config.data.cache_dir
        size = self.config.data.cache_size
        ctx = self.ctx
        if ctx.is_main:
            cache = ImageCache.build(
                manifest, cache_dir, size, progress=self.progress, transform=masker
            )
        ctx.barrier()
        if ctx.local_rank == 0 and not ctx.is_main:
            cache = ImageCache.build(manifest, cache_dir, size, progress=False, transform=masker)
        ctx.barrier()
        if ctx.local_rank != 0:
            cache = ImageCache.build(manifest, cache_dir, size, progress=False, transform=masker)
        return cache

    # ------------------------------------------------------------------ resume
    def _state(self, epoch: int, rng_ranks: list[dict]) -> dict:
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
            "amp": self._amp_name(),
            "architecture": self.config.model.name,
            "classes": list(self.label_space.classes),
            "manifest_fingerprint": self.manifest.fingerprint(),
            "lung_mask": self.preprocess.lung_mask.identity() if self.preprocess.lung_mask else "",
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
        }

    def resume(self) -> None:
        state = load_train_state(self.out_dir)
        if state["architecture"] != self.config.model.name or list(state["classes"]) != list(
            self.label_space.classes
        ):
            raise CheckpointError(
                f"cannot resume: {self.out_dir} holds a {state['architecture']} run over {state['classes']}, "
                f"but the config asks for {self.config.model.name} over {list(self.label_space.classes)}"
            )
        if state["manifest_fingerprint"] != self.manifest.fingerprint():
            raise CheckpointError(
                f"cannot resume: the dataset or its splits changed since the run in {self.out_dir} started "
                f"(manifest fingerprint {state['manifest_fingerprint']} then, {self.manifest.fingerprint()} now)"
            )
        lung_mask = self.preprocess.lung_mask.identity() if self.preprocess.lung_mask else ""
        if state.get("lung_mask", "") != lung_mask:

            def said(identity: str) -> str:
                return f"lung masking ({identity})" if identity else "no lung masking"

            raise CheckpointError(
                f"cannot resume: the run in {self.out_dir} started with {said(state.get('lung_mask', ''))}, but the "
                f"config asks for {said(lung_mask)}; the training images would change mid-run. Restore the "
                "preprocess settings (and lung model) of that run, or start a new run"
            )
        self.model.load_state_dict(state["model"])
        if self.ema:
            if not state["ema"]:
                raise CheckpointError(
                    "cannot resume: the config enables ema but the interrupted run had none"
                )
            self.ema.model.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        load_scaler_state(
            self.scaler, state["scaler"], saved_amp=state.get("amp", "?"), amp=self._amp_name()
        )
        self.start_epoch = int(state["epoch"]) + 1
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.elapsed = float(state["elapsed"])
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) != self.ctx.world_size:
            if self.ctx.is_main:
                logger.warning(
                    "resuming a %s-process run with %d processes; the sample order and random draws "
                    "change from here on",
                    state["world_size"],
                    self.ctx.world_size,
                )
            restore_rng(ranks[min(self.ctx.rank, len(ranks) - 1)], self.device)
        else:
            restore_rng(ranks[self.ctx.rank], self.device)
        self.history = self._read_log(keep_before=self.start_epoch)

    def _read_log(self, keep_before: int) -> list[dict]:
        path = self.run_dir.training_log
        if not path.is_file():
            return []
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["epoch"] < keep_before]

    # ------------------------------------------------------------------ epochs
    def _amp_name(self) -> str:
        return str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off"

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
        tally = _LossTally(self.device)
        seen = 0
        self.optimizer.zero_grad(set_to_none=True)
        bar = tqdm(
            self.train_loader,
            total=n_batches,
            desc=f"epoch {epoch + 1}/{c.epochs} train",
            unit="batch",
            disable=not self.progress,
            leave=False,
        )
        for step, (images, targets, _) in enumerate(bar):
            group_start = step - step % accum
            group_size = min(accum, n_batches - group_start)
            boundary = step + 1 == group_start + group_size
            images = self._to_device(images)
            targets = targets.to(self.device, non_blocking=True)
            sync = (
                self.ddp.no_sync()
                if (self.ctx.enabled and not boundary)
                else contextlib.nullcontext()
            )
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
                    self.ema.update()
            tally.add(loss, images.shape[0])
            seen += images.shape[0]
            if self.progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{self.schedule.lr:.2e}")
        bar.close()
        mean, finite_images, nonfinite = tally.result(self.ctx)
        # The GradScaler skips fp16 steps whose gradients overflowed; any other non-finite loss
        # has already been applied to the weights.
        if nonfinite and (not self.scaler.is_enabled() or finite_images == 0):
            raise TrainingDivergedError(
                f"training loss became non-finite in {nonfinite} batch(es) of epoch {epoch + 1} (amp "
                f"{self._amp_name()}); lower optim.lr, or use amp: off"
            )
        self.nonfinite_batches = nonfinite
        return mean, seen * self.ctx.world_size

    @torch.no_grad()
    def predict_val(self) -> tuple[np.ndarray, float]:
        """Probabilities for the whole validation split (row order of the val manifest) and the mean loss."""
        model = self.ema.model if self.ema else self.model
        self.ctx.broadcast_buffers(model)
        model.eval()
        rows, outputs = [], []
        loss_sum, count = 0.0, 0
        for images, targets, index in tqdm(
            self.val_loader, desc="validation", unit="batch", disable=not self.progress, leave=False
        ):
            with self._autocast():
                logits = model(self._to_device(images)).float()
            loss_sum += (
                self.criterion(logits, targets.to(self.device, non_blocking=True)).double()
                * images.shape[0]
            )
            count += images.shape[0]
            rows.append(index.numpy())
            outputs.append(activate(logits, self.multilabel).to("cpu", non_blocking=True))
        if self.device.type == "cuda":
            torch.cuda.current_stream(
                self.device
            ).synchronize()  # the non-blocking copies above have landed
        local = (
            np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
            torch.cat(outputs).numpy()
            if outputs
            else np.zeros((0, self.label_space.num_classes), dtype=np.float32),
            float(loss_sum),
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
                "device": str(self.device)
                if self.device.type == "cpu"
                else torch.cuda.get_device_name(self.device),
                "world_size": self.ctx.world_size,
                "global_batch_size": self.global_batch_size,
                "amp": self._amp_name(),
                "trainable_parameters": self.trainable,
                "ema": c.ema is not None,
            },
            data=data_card(c.data, self.manifest),
            validation=validation,
            provenance=c.provenance
            or f"Trained with cxr_core on {self.manifest.source or c.data.path}.",
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
        last_epoch = (
            c.epochs
            if stop_after_epochs is None
            else min(c.epochs, self.start_epoch + stop_after_epochs)
        )
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, last_epoch):
            started = time.perf_counter()
            train_loss, n_images = self.train_epoch(epoch)
            train_seconds = time.perf_counter() - started
            probs, val_loss = self.predict_val()
            value, extra = _monitored(self.multilabel, self.val_manifest.labels(), probs)
            self.schedule.step_epoch(value)
            improved = (
                math.isfinite(value) and value > self.best_metric + c.early_stopping.min_delta
            )
            if improved:
                self.best_metric, self.best_epoch, self.bad_epochs = value, epoch, 0
            else:
                self.bad_epochs += 1
            seconds = time.perf_counter() - started
            self.elapsed += seconds
            rng_ranks = self.ctx.all_gather_object(capture_rng(self.device))
            if self.ctx.is_main:
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "monitor": self.monitor,
                    **{k: _finite_or_none(v) for k, v in extra.items() if k != "val_auroc"},
                    "val_auroc": {
                        cls: _finite_or_none(a)
                        for cls, a in zip(self.label_space.classes, extra["val_auroc"])
                    },
                    "lr": self.schedule.lr,
                    "seconds": round(seconds, 2),
                    "images_per_s": round(n_images / train_seconds, 1)
                    if train_seconds > 0
                    else None,
                    "best": improved,
                    **(
                        {"nonfinite_batches": self.nonfinite_batches}
                        if self.scaler.is_enabled()
                        else {}
                    ),
                }
                card = self._card(
                    epoch + 1,
                    False,
                    {
                        "note": "provisional: epoch-level metrics; final numbers are written when training ends"
                    },
                )
                if improved:
                    save_checkpoint(self.run_dir.model, self._weights(), card, half=c.half_weights)
                save_checkpoint(self.run_dir.last, self._weights(), card)
                self._log(row)
                save_train_state(self.out_dir, self._state(epoch, rng_ranks))
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
        report = (
            self._finish(epochs_run, stopped_early) if (self.ctx.is_main and completed) else None
        )
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
            best,
            card,
            self.val_manifest,
            self.cache,
            self.run_dir.eval_dir("val"),
            n_boot=c.eval.n_boot,
            seed=c.seed,
            batch_size=c.eval.batch_size,
            device=self.device,
            half=c.half_weights,
            progress=self.progress,
            operating_point=c.eval.operating_point,
        )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
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
        result = trainer.run(resume, stop_after_epochs)
    except BaseException:
        shutdown_distributed(ctx, failed=True)
        raise
    shutdown_distributed(ctx)
    return result
