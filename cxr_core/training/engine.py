"""The training engine behind ``cxr train``: one loop for every task, on CPU, one GPU or ``torchrun``.

:func:`train` picks the task a config names (``task: classification`` or ``segmentation``,
see :mod:`cxr_core.training.task`) and runs it here. Per epoch: train (AMP, gradient
accumulation, DDP, EMA, channels-last), let the task validate, step the learning-rate
schedule, decide whether the monitored metric improved, call the handlers (best checkpoint,
early stopping, training log, progress; :mod:`.handlers`) and save everything needed to
resume, atomically. At the end rank 0 has the task finalise the best checkpoint.

Reproducibility: seeds for torch/NumPy/Python, per-epoch sample order and augmentation
seeded from (seed, epoch, batch) (see :mod:`.sampling`), every rank's RNG states (CPU, its
CUDA device, NumPy, Python) saved every epoch. On the CPU, an interrupted run resumed with
``--resume`` ends with bit-identical weights to an uninterrupted one. On CUDA,
``cudnn.benchmark`` picks the fastest (not bit-deterministic) kernels, so runs agree to
rounding only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxr_core.artifacts.run_dir import RunDir
from cxr_core.errors import CheckpointError, ConfigError, TrainingDivergedError
from cxr_core.models import apply_finetune, freeze_bn_stats
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.training import classification as _classification  # noqa: F401  (registers the task)
from cxr_core.training import segmentation as _segmentation  # noqa: F401  (registers the task)
from cxr_core.training.amp import load_scaler_state
from cxr_core.training.config import TrainConfig, load_config
from cxr_core.training.ema import EMA
from cxr_core.training.handlers import (
    BestCheckpoint,
    EarlyStopping,
    EpochRecord,
    Handler,
    Progress,
    TrainingLog,
)
from cxr_core.training.runtime import Runtime, process_batch_size
from cxr_core.training.sampling import EpochSampler, SeededItems
from cxr_core.training.schedule import LRSchedule
from cxr_core.training.state import (
    capture_rng,
    load_train_state,
    restore_rng,
    save_train_state,
    seed_everything,
)
from cxr_core.training.steps import LossTally, accumulation_group
from cxr_core.training.task import TrainingTask, Validation, finite_or_none, get_task
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.distributed import DistContext, init_distributed, shutdown_distributed

logger = logging.getLogger(__name__)

PROVISIONAL = {
    "note": "provisional: epoch-level metrics; final numbers are written when training ends"
}


@dataclass
class TrainResult:
    """What :func:`train` reports: where the run is, how it went, and its final validation."""

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
    report: Any  # validation report of the best model (rank 0 of a completed run only)
    headline: str = ""  # the task's line on that report, for the terminal


@dataclass
class Parts:
    """What a run trains and how: the model (DDP-wrapped as ``ddp``), its weight average, the
    loss, the optimizer with its schedule and the fp16 loss scaler."""

    model: nn.Module
    ddp: nn.Module
    ema: EMA | None
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    trainable: int

    @property
    def shipped(self) -> nn.Module:
        """The model that is validated and saved: the weight average when there is one."""
        return self.ema.model if self.ema else self.model


@dataclass
class LoopState:
    """Where the loop stands; saved every epoch and restored by ``resume``."""

    start_epoch: int = 0
    best_metric: float = -math.inf
    best_epoch: int = -1
    elapsed: float = 0.0
    nonfinite_batches: int = 0


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            f"model.finetune {config.model.finetune!r} leaves no trainable parameters"
        )
    o = config.optim
    kind = {"adam": torch.optim.Adam, "nadam": torch.optim.NAdam, "adamw": torch.optim.AdamW}
    return kind[o.name](params, lr=o.lr, weight_decay=o.weight_decay)


class Engine:
    """One run of one task: :meth:`setup`, then :meth:`run` (which may :meth:`resume`)."""

    def __init__(
        self,
        config: TrainConfig,
        ctx: DistContext,
        progress: bool = True,
        handlers: Sequence[Handler] = (),
    ) -> None:
        self.config = config
        self.runtime = Runtime.for_config(config, ctx, progress)
        self.run_dir = RunDir(Path(config.out_dir))
        self.task: TrainingTask = get_task(config.task)(config, self.runtime)
        self.handlers: list[Handler] = [
            EarlyStopping(config.early_stopping.patience),
            BestCheckpoint(self.run_dir.model, half=config.half_weights),
            TrainingLog(self.run_dir.training_log),
            *([Progress()] if self.runtime.progress else []),
            *handlers,
        ]
        self.loop = LoopState()

    @property
    def ctx(self) -> DistContext:
        return self.runtime.ctx

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        c = self.config
        seed_everything(c.seed)
        if self.runtime.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        train_set = self.task.prepare()
        self.sampler = EpochSampler(
            len(train_set), seed=c.seed, rank=self.ctx.rank, world_size=self.ctx.world_size
        )
        self.batch_size = process_batch_size(
            c.optim.batch_size, c.optim.grad_accum, c.optim.global_batch_size, self.ctx.world_size
        )
        self.global_batch_size = self.batch_size * c.optim.grad_accum * self.ctx.world_size
        self._log_batch_size()
        self.loader = self.runtime.loader(
            SeededItems(train_set, c.seed),
            batch_size=self.batch_size,
            sampler=self.sampler,
            generator=torch.Generator().manual_seed(c.seed),
        )
        self.parts = self._build_parts()

    def _log_batch_size(self) -> None:
        c, ctx = self.config, self.ctx
        if not ctx.is_main:
            return
        per_process = (
            "from optim.global_batch_size"
            if c.optim.global_batch_size
            else "optim.batch_size, per process"
        )
        (logger.warning if ctx.enabled and not c.optim.global_batch_size else logger.info)(
            "global batch %d images per optimizer step = %d per process (%s) x %d process(es) x grad_accum %d, "
            "at optim.lr %g as configured (not rescaled)",
            self.global_batch_size,
            self.batch_size,
            per_process,
            ctx.world_size,
            c.optim.grad_accum,
            c.optim.lr,
        )

    def _build_parts(self) -> Parts:
        c, device = self.config, self.runtime.device
        torch.manual_seed(c.seed)  # identical initial weights on every rank and every run
        model = self.task.build_model()
        trainable = apply_finetune(model, c.model.name, c.model.finetune)
        model.to(device)
        if self.runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        ema = EMA(model, c.ema.decay) if c.ema else None
        ddp = model
        if self.ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        optimizer = build_optimizer(c, model)
        steps_per_epoch = math.ceil(len(self.loader) / c.optim.grad_accum)
        schedule = LRSchedule(
            optimizer,
            kind=c.schedule.name,
            total_steps=steps_per_epoch * c.epochs,
            warmup_steps=round(c.schedule.warmup_epochs * steps_per_epoch),
            patience=c.schedule.patience,
            factor=c.schedule.factor,
            min_lr=c.schedule.min_lr,
        )
        return Parts(
            model=model,
            ddp=ddp,
            ema=ema,
            criterion=self.task.loss().to(device),
            optimizer=optimizer,
            schedule=schedule,
            scaler=torch.amp.GradScaler("cuda", enabled=self.runtime.amp_dtype == torch.float16),
            trainable=trainable,
        )

    # ------------------------------------------------------------------ resume
    def _state(self, epoch: int, rng_ranks: list[dict]) -> dict:
        p = self.parts
        handler_states = {k: v for h in self.handlers for k, v in h.state_dict().items()}
        return {
            "epoch": epoch,
            "model": p.model.state_dict(),
            "ema": p.ema.model.state_dict() if p.ema else {},
            "optimizer": p.optimizer.state_dict(),
            "schedule": p.schedule.state_dict(),
            "scaler": p.scaler.state_dict(),
            "best_metric": self.loop.best_metric,
            "best_epoch": self.loop.best_epoch,
            **handler_states,
            "elapsed": self.loop.elapsed,
            "world_size": self.ctx.world_size,
            "amp": self.runtime.amp,
            **self.task.identity(),
            "rng": rng_ranks[0],
            "rng_ranks": rng_ranks,
        }

    def resume(self) -> None:
        """Continue exactly where ``train_state.pt`` left off, refusing a changed run."""
        state = load_train_state(self.run_dir.path)
        self.task.check_resume(state, self.run_dir.path)
        p = self.parts
        p.model.load_state_dict(state["model"])
        if p.ema:
            if not state["ema"]:
                raise CheckpointError(
                    "cannot resume: the config enables ema but the interrupted run had none"
                )
            p.ema.model.load_state_dict(state["ema"])
        p.optimizer.load_state_dict(state["optimizer"])
        p.schedule.load_state_dict(state["schedule"])
        load_scaler_state(
            p.scaler, state["scaler"], saved_amp=state.get("amp", "?"), amp=self.runtime.amp
        )
        self.loop = LoopState(
            start_epoch=int(state["epoch"]) + 1,
            best_metric=float(state["best_metric"]),
            best_epoch=int(state["best_epoch"]),
            elapsed=float(state["elapsed"]),
        )
        self._restore_rng(state)
        for handler in self.handlers:
            handler.load_state_dict(state)

    def _restore_rng(self, state: dict) -> None:
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) != self.ctx.world_size and self.ctx.is_main:
            logger.warning(
                "resuming a %s-process run with %d processes; the sample order and random draws "
                "change from here on",
                state["world_size"],
                self.ctx.world_size,
            )
        restore_rng(ranks[min(self.ctx.rank, len(ranks) - 1)], self.runtime.device)

    # ------------------------------------------------------------------ epochs
    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over this process's share of the training set: (mean loss, images of all ranks)."""
        p, rt = self.parts, self.runtime
        self.sampler.set_epoch(epoch)
        p.ddp.train()
        freeze_bn_stats(p.model)
        tally = LossTally(rt.device)
        seen = 0
        p.optimizer.zero_grad(set_to_none=True)
        bar = rt.progress_bar(
            self.loader, f"epoch {epoch + 1}/{self.config.epochs} train", total=len(self.loader)
        )
        for step, (images, targets, _) in enumerate(bar):
            group_size, boundary = accumulation_group(
                step, len(self.loader), self.config.optim.grad_accum
            )
            images = rt.to_device(images)
            targets = targets.to(rt.device, non_blocking=True)
            loss = self._backward(images, targets, group_size, boundary)
            if boundary:
                self._step()
            tally.add(loss, images.shape[0])
            seen += images.shape[0]
            if rt.progress and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{p.schedule.lr:.2e}")
        bar.close()
        mean, finite_images, nonfinite = tally.result(self.ctx)
        # The GradScaler skips fp16 steps whose gradients overflowed; any other non-finite loss
        # has already been applied to the weights.
        if nonfinite and (not p.scaler.is_enabled() or finite_images == 0):
            raise TrainingDivergedError(
                f"training loss became non-finite in {nonfinite} batch(es) of epoch {epoch + 1} (amp "
                f"{rt.amp}); lower optim.lr, or use amp: off"
            )
        self.loop.nonfinite_batches = nonfinite
        return mean, seen * self.ctx.world_size

    def _backward(
        self, images: torch.Tensor, targets: torch.Tensor, group_size: int, boundary: bool
    ) -> torch.Tensor:
        """Forward and backward of one batch; gradients are only synchronised at a group's end."""
        p = self.parts
        sync = p.ddp.no_sync() if (self.ctx.enabled and not boundary) else contextlib.nullcontext()
        with sync:
            with self.runtime.autocast():
                logits = p.ddp(images)
            loss = p.criterion(logits.float(), targets)
            p.scaler.scale(loss / group_size).backward()
        return loss

    def _step(self) -> None:
        p = self.parts
        p.scaler.step(p.optimizer)
        p.scaler.update()
        p.optimizer.zero_grad(set_to_none=True)
        p.schedule.step_batch()
        if p.ema:
            p.ema.update()

    @torch.no_grad()
    def validate(self) -> Validation:
        """The task's validation of the shipped model, with rank 0's BatchNorm statistics."""
        model = self.parts.shipped
        self.ctx.broadcast_buffers(model)
        model.eval()
        return self.task.validate(model, self.parts.criterion)

    def run_epoch(self, epoch: int) -> bool:
        """Train, validate, call the handlers, save the resumable state; True: stop here."""
        p = self.parts
        started = time.perf_counter()
        train_loss, n_images = self.train_epoch(epoch)
        train_seconds = time.perf_counter() - started
        validation = self.validate()
        p.schedule.step_epoch(validation.value)
        improved = math.isfinite(validation.value) and (
            validation.value > self.loop.best_metric + self.config.early_stopping.min_delta
        )
        if improved:
            self.loop.best_metric, self.loop.best_epoch = validation.value, epoch
        seconds = time.perf_counter() - started
        self.loop.elapsed += seconds
        rng_ranks = self.ctx.all_gather_object(capture_rng(self.runtime.device))
        record = EpochRecord(
            epoch=epoch,
            epochs=self.config.epochs,
            monitor=self.task.monitor,
            train_loss=train_loss,
            images=n_images,
            train_seconds=train_seconds,
            seconds=seconds,
            validation=validation,
            improved=improved,
            lr=p.schedule.lr,
            nonfinite_batches=self.loop.nonfinite_batches if p.scaler.is_enabled() else None,
            weights=p.shipped.state_dict(),
            card=self.card(epoch + 1, False, PROVISIONAL) if self.ctx.is_main else None,
        )
        for handler in self.handlers:
            if self.ctx.is_main or not handler.main_only:
                handler.epoch_completed(record)
        if self.ctx.is_main:
            save_checkpoint(self.run_dir.last, record.weights, record.card)
            save_train_state(self.run_dir.path, self._state(epoch, rng_ranks))
        self.ctx.barrier()
        return any(h.should_stop for h in self.handlers)

    # ------------------------------------------------------------------ outputs
    def training_summary(self, epochs_run: int, stopped_early: bool) -> dict:
        """The ``training`` section of the card: how the run went, on what, with which settings."""
        c, rt = self.config, self.runtime
        return {
            "config": c.to_dict(),
            "epochs_run": epochs_run,
            "best_epoch": self.loop.best_epoch + 1,
            "monitor": self.task.monitor,
            "best_metric": finite_or_none(self.loop.best_metric),
            "stopped_early": stopped_early,
            "wall_time_s": round(self.loop.elapsed, 1),
            "device": str(rt.device)
            if rt.device.type == "cpu"
            else torch.cuda.get_device_name(rt.device),
            "world_size": self.ctx.world_size,
            "global_batch_size": self.global_batch_size,
            "amp": rt.amp,
            "trainable_parameters": self.parts.trainable,
            "ema": c.ema is not None,
        }

    def card(self, epochs_run: int, stopped_early: bool, validation: dict) -> ModelCard:
        return self.task.card(self.training_summary(epochs_run, stopped_early), validation)

    def run(self, resume: bool, stop_after_epochs: int | None = None) -> TrainResult:
        self._start(resume)
        c = self.config
        first = self.loop.start_epoch
        last = c.epochs if stop_after_epochs is None else min(c.epochs, first + stop_after_epochs)
        epoch, stopped_early = first - 1, False
        for epoch in range(first, last):
            if self.run_epoch(epoch):
                stopped_early = True
                break
        epochs_run = epoch + 1
        completed = stopped_early or epochs_run >= c.epochs
        report = (
            self._finish(epochs_run, stopped_early) if (self.ctx.is_main and completed) else None
        )
        self.ctx.barrier()
        return TrainResult(
            out_dir=self.run_dir.path,
            best_checkpoint=self.run_dir.model,
            last_checkpoint=self.run_dir.last,
            monitor=self.task.monitor,
            best_metric=self.loop.best_metric,
            best_epoch=self.loop.best_epoch + 1,
            epochs_run=epochs_run,
            stopped_early=stopped_early,
            completed=completed,
            wall_time_s=self.loop.elapsed,
            report=report,
            headline=self.task.headline(report) if report is not None else "",
        )

    def _start(self, resume: bool) -> None:
        if self.ctx.is_main:
            self.run_dir.path.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif self.run_dir.state.exists():  # every rank checks, so all stop together
            raise ConfigError(
                f"{self.run_dir.path} already holds a training run; pass --resume to continue it or choose "
                "another --out"
            )
        if self.ctx.is_main:
            write_text_atomically(self.run_dir.config, self.config.to_yaml())

    def _finish(self, epochs_run: int, stopped_early: bool) -> dict:
        best = self.run_dir.model
        if not best.is_file():
            raise CheckpointError(
                f"no epoch produced a defined {self.task.monitor}, so no best model was saved in "
                f"{self.run_dir.path}"
            )
        return self.task.finalise(best, self.training_summary(epochs_run, stopped_early))


def train(
    config: TrainConfig | str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
    handlers: Sequence[Handler] = (),
) -> TrainResult:
    """Train the task ``config.task`` names, as configured (a YAML path is read first).

    ``resume=True`` continues exactly from ``out_dir/train_state.pt``. ``stop_after_epochs=N``
    ends this call after N more epochs, leaving a resumable state (the schedule still spans
    ``config.epochs``): training in chunks on machines whose sessions are time-limited, and
    how the resume tests simulate an interruption. ``handlers`` are called after the built-in
    ones at the end of every epoch.
    """
    if not isinstance(config, TrainConfig):
        config = load_config(config)
    if stop_after_epochs is not None and stop_after_epochs < 1:
        raise ConfigError(f"stop_after_epochs must be >= 1, got {stop_after_epochs}")
    ctx = init_distributed(config.device)
    try:
        engine = Engine(config, ctx, progress, handlers)
        engine.setup()
        result = engine.run(resume, stop_after_epochs)
    except BaseException:
        shutdown_distributed(ctx, failed=True)
        raise
    shutdown_distributed(ctx)
    return result
