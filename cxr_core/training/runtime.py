"""Where and how a run computes: its process, precision, memory layout and data loaders.

The engine builds one :class:`Runtime` per run and hands it to the task, so a task's
validation runs on the same device, under the same autocast and with the same loader
settings as the training steps, without knowing which GPU, how many processes or which
precision the run uses.

Batch size: ``optim.batch_size`` is per process; under ``torchrun`` with N processes a step
sees N times as many images at the same learning rate. ``optim.global_batch_size`` fixes the
images per optimizer step instead, whatever N (:func:`process_batch_size`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cxr_core.data.dataset import collate_batch
from cxr_core.errors import ConfigError
from cxr_core.training.amp import amp_name, resolve_amp
from cxr_core.training.config import TrainConfig
from cxr_core.training.sampling import worker_init
from cxr_core.utils.distributed import DistContext

MAX_AUTO_WORKERS = 8


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


@dataclass(frozen=True)
class Runtime:
    """One process's share of a run: ``ctx`` (rank, device, collectives), the autocast dtype
    (None: float32), NHWC activations, whether this process shows progress (rank 0 only) and
    its DataLoader workers."""

    ctx: DistContext
    amp_dtype: torch.dtype | None
    channels_last: bool
    progress: bool
    workers: int

    @classmethod
    def for_config(cls, config: TrainConfig, ctx: DistContext, progress: bool) -> Runtime:
        return cls(
            ctx=ctx,
            amp_dtype=resolve_amp(config.amp, ctx.device),
            channels_last=config.channels_last,
            progress=progress and ctx.is_main,
            workers=loader_workers(config.num_workers, ctx.local_world_size),
        )

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def amp(self) -> str:
        return amp_name(self.amp_dtype)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of network inputs on the run's device, in its memory layout."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def loader(self, dataset: Dataset, *, batch_size: int, **options: Any) -> DataLoader:
        """A DataLoader with the run's workers, pinned memory on CUDA and batch collation."""
        cuda = self.device.type == "cuda"
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.workers,
            pin_memory=cuda,
            worker_init_fn=worker_init,
            persistent_workers=cuda and self.workers > 0,
            collate_fn=collate_batch,
            **options,
        )

    def progress_bar(self, iterable: Iterable, desc: str, **options: Any) -> tqdm:
        """A progress bar over batches, shown by the process that shows progress."""
        return tqdm(
            iterable, desc=desc, unit="batch", disable=not self.progress, leave=False, **options
        )

    def synchronize(self) -> None:
        """Wait until non-blocking copies to the host have landed (a no-op off CUDA)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
