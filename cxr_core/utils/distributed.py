"""Single-process and ``torchrun`` multi-process runs share one code path.

When ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK, :func:`init_distributed` joins the process
group (NCCL on CUDA, Gloo on CPU) and pins each process to its GPU; otherwise it returns a
context of world size 1 whose collectives are no-ops, so the loop never branches on "is this
distributed". Only rank 0 writes files, logs and progress bars.

Validation: each rank predicts a disjoint, unpadded slice of the validation set
(``indices[rank::world_size]``) and the slices are gathered with ``all_gather_object``; every
rank then holds the full validation set exactly once (DistributedSampler would pad with
duplicates and bias the metrics), computes identical metrics, and takes identical
early-stopping and learning-rate decisions without another round of messages. Before that,
BatchNorm running statistics are broadcast from rank 0 (DDP only does so before a training
forward), so every shard is scored by the model rank 0 saves.

Failure: a rank that raises leaves without any further collective (a barrier while
unwinding would block it until the 60-minute timeout, and torchrun, which stops the other
ranks when one exits, would never see it exit). Decisions that can fail, such as a
non-finite epoch loss, are taken after an all-reduce so that every rank raises together.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cxr_core.errors import ConfigError
from cxr_core.utils.device import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    local_world_size: int = 1
    owns_group: bool = False  # this context created the process group, so it alone destroys it

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

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over ranks (in place; returned for chaining)."""
        if self.enabled:
            dist.all_reduce(values)
        return values

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), as in its checkpoint."""
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def shard(self, n: int) -> list[int]:
        """This rank's disjoint, unpadded share of ``range(n)``."""
        return list(range(self.rank, n, self.world_size))


def reassemble(shards: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Rows the ranks computed for their shards (``(indices, rows)`` each), in the set's order."""
    index = np.concatenate([np.asarray(s[0], dtype=np.int64) for s in shards])
    rows = np.concatenate([s[1] for s in shards])
    ordered = np.empty_like(rows)
    ordered[index] = rows
    return ordered


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def init_distributed(device_preference: str) -> DistContext:
    """This process's rank, device and (under torchrun) process group.

    The chosen GPU is made the current device (``torch.cuda.set_device``): without it,
    ``cuda:1`` would hold the weights while cuDNN workspaces, NCCL buffers and
    ``all_gather_object`` land on ``cuda:0``. A process group that already exists (``cxr
    ensemble`` trains all members in one) is joined, not re-created, and left to its owner.
    """
    if not launched_by_torchrun():
        device = resolve_device(device_preference)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return DistContext(rank=0, world_size=1, local_rank=0, device=device)
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if device_preference.startswith("cuda:"):
        raise ConfigError(
            "device: with torchrun use 'auto' or 'cuda'; each process takes the GPU of its LOCAL_RANK"
        )
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=60)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        dist.init_process_group(**kwargs)
    return DistContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=device,
        local_world_size=local_world_size,
        owns_group=owns,
    )


def shutdown_distributed(ctx: DistContext, *, failed: bool = False) -> None:
    """Leave the process group: after a final barrier normally, at once when ``failed``.

    After an exception nothing collective may run: the other ranks may never reach it, and
    destroying the group can wait on their pending collectives too. The failing process
    exits with its error; torchrun sees that and stops the others.
    """
    if not (ctx.enabled and ctx.owns_group and dist.is_initialized()):
        return
    if failed:
        logger.error("rank %d failed; leaving without waiting for the other ranks", ctx.rank)
        return
    ctx.barrier()
    dist.destroy_process_group()
