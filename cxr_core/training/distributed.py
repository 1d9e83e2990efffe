"""Single-process and ``torchrun`` multi-process training share one code path.

When ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK, :func:`init_distributed` joins the process
group (NCCL on CUDA, Gloo on CPU) and pins each process to its GPU; otherwise it returns a
context of world size 1 whose collectives are no-ops, so the loop never branches on "is this
distributed". Only rank 0 writes files, logs and progress bars.

Validation: each rank predicts a disjoint, unpadded slice of the validation set
(``indices[rank::world_size]``) and the slices are gathered with ``all_gather_object``; every
rank then holds the full validation set exactly once (DistributedSampler would pad with
duplicates and bias the metrics), computes identical metrics, and takes identical
early-stopping and learning-rate decisions without another round of messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from cxr_core.errors import ConfigError


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def mean(self, value: float, weight: float = 1.0) -> float:
        """Weighted mean of a per-rank scalar across ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value * weight, weight], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0] / t[1]) if float(t[1]) else float("nan")

    def shard(self, n: int) -> list[int]:
        """This rank's disjoint, unpadded share of ``range(n)``."""
        return list(range(self.rank, n, self.world_size))


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; an explicit ``cuda`` without a GPU is a ConfigError."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: '{preference}' requested but no CUDA GPU is available; use device: auto or cpu")
        if preference == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(preference)
    return torch.device("cpu")


def init_distributed(device_preference: str) -> DistContext:
    if not launched_by_torchrun():
        return DistContext(rank=0, world_size=1, local_rank=0, device=resolve_device(device_preference))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        if device_preference.startswith("cuda:"):
            raise ConfigError("device: with torchrun use 'auto' or 'cuda'; each process takes the GPU of its LOCAL_RANK")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=60)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def shutdown_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        ctx.barrier()
        dist.destroy_process_group()
