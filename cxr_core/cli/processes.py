"""The processes of a ``cxr predict`` / ``cxr evaluate`` run: one, or those ``torchrun`` started.

Prediction and evaluation join the process group the training engine uses
(:mod:`cxr_core.utils.distributed`: Gloo on CPU, NCCL with one GPU per process). A process
whose run raises leaves at once without any further collective, so ``torchrun`` sees it exit
with its error and stops the others instead of letting them wait at a barrier.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cxr_core.utils.distributed import DistContext, init_distributed, shutdown_distributed


@contextmanager
def run_processes(device: str) -> Iterator[DistContext]:
    """This process's rank and device for the length of a run."""
    ctx = init_distributed(device)
    try:
        yield ctx
    except BaseException:
        shutdown_distributed(ctx, failed=True)
        raise
    shutdown_distributed(ctx)
