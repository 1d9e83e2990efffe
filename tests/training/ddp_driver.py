"""Entry point the multi-process tests start under ``torchrun``: ``cxr train`` with one hook.

``python ddp_driver.py CONFIG MODE [--resume] [--stop-after N]``, MODE one of
``plain``, ``fail-rank-1`` (rank 1 raises in its first epoch, the others carry on into
the all-reduce), ``record`` (each rank writes the buffers of the model it validates
with, and its per-process batch size, to ``out_dir/rank<R>.pt``) and ``diverge`` (rank R
draws R extra numbers from each generator per epoch, so the ranks' random states differ, as
each GPU's own CUDA generator does).
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

from cxr_core.cli.main import main
from cxr_core.errors import CXRError
from cxr_core.training.engine import Engine


def _fail_on_rank_1(original):
    def train_epoch(self, epoch):
        if self.ctx.rank == 1:
            raise CXRError("injected failure on rank 1")
        return original(self, epoch)

    return train_epoch


def _record(original):
    def validate(self):
        result = original(self)
        torch.save(
            {
                "buffers": {k: v.clone() for k, v in self.parts.shipped.named_buffers()},
                "batch_size": self.batch_size,
            },
            os.path.join(self.config.out_dir, f"rank{self.ctx.rank}.pt"),
        )
        return result

    return validate


def _diverge(original):
    def train_epoch(self, epoch):
        for _ in range(self.ctx.rank):
            torch.rand(1)
            np.random.rand()
            random.random()
        return original(self, epoch)

    return train_epoch


if __name__ == "__main__":
    config, mode, *rest = sys.argv[1:]
    if mode == "fail-rank-1":
        Engine.train_epoch = _fail_on_rank_1(Engine.train_epoch)
    elif mode == "record":
        Engine.validate = _record(Engine.validate)
    elif mode == "diverge":
        Engine.train_epoch = _diverge(Engine.train_epoch)
    sys.exit(main(["train", "--config", config, "--no-progress", *rest]))
