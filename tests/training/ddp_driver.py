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
from cxr_core.training import loop


def _fail_on_rank_1(original):
    def train_epoch(self, epoch):
        if self.ctx.rank == 1:
            raise CXRError("injected failure on rank 1")
        return original(self, epoch)

    return train_epoch


def _record(original):
    def predict_val(self):
        result = original(self)
        model = self.ema.model if self.ema else self.model
        torch.save(
            {
                "buffers": {k: v.clone() for k, v in model.named_buffers()},
                "batch_size": self.batch_size,
            },
            os.path.join(self.config.out_dir, f"rank{self.ctx.rank}.pt"),
        )
        return result

    return predict_val


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
        loop.Trainer.train_epoch = _fail_on_rank_1(loop.Trainer.train_epoch)
    elif mode == "record":
        loop.Trainer.predict_val = _record(loop.Trainer.predict_val)
    elif mode == "diverge":
        loop.Trainer.train_epoch = _diverge(loop.Trainer.train_epoch)
    sys.exit(main(["train", "--config", config, "--no-progress", *rest]))
