"""What happens at the end of every epoch, apart from training itself: attachable handlers.

As in MONAI's and Ignite's engines, the loop only trains, validates and decides whether the
monitored metric improved; keeping the best checkpoint, stopping early, writing the training
log and showing progress are handlers the engine calls with an :class:`EpochRecord`. Handlers
run on rank 0 only unless ``main_only`` is false (early stopping: every process must stop at
the same epoch). A handler with state to survive an interruption returns it from
``state_dict`` (saved in ``train_state.pt``) and takes it back in ``load_state_dict``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.training.task import Validation
from cxr_core.utils.atomic import write_text_atomically


@dataclass
class EpochRecord:
    """One finished epoch as the handlers see it."""

    epoch: int  # counted from 0
    epochs: int  # as configured
    monitor: str  # the log key of the monitored metric
    train_loss: float  # mean over the finite batches of every process
    images: int  # training images seen by all processes
    train_seconds: float
    seconds: float  # training and validation
    validation: Validation
    improved: bool  # the monitored metric beat the best so far by more than min_delta
    lr: float
    nonfinite_batches: int | None  # batches the fp16 loss scaler skipped (None without fp16)
    weights: dict[str, torch.Tensor]  # what the run ships: the weight average's with ema
    card: ModelCard | None  # the provisional card (rank 0)


class Handler:
    """Base of the end-of-epoch handlers: every method is optional."""

    main_only = True
    should_stop = False

    def epoch_completed(self, record: EpochRecord) -> None:
        """Called after validation, before the resumable state of the epoch is written."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what :meth:`state_dict` saved (``state`` is the whole ``train_state.pt``)."""


class EarlyStopping(Handler):
    """Stop after ``patience`` epochs in a row without improvement (None: never)."""

    main_only = False

    def __init__(self, patience: int | None) -> None:
        self.patience = patience
        self.bad_epochs = 0

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def epoch_completed(self, record: EpochRecord) -> None:
        self.bad_epochs = 0 if record.improved else self.bad_epochs + 1

    def state_dict(self) -> dict:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.bad_epochs = int(state["bad_epochs"])


class BestCheckpoint(Handler):
    """``model.safetensors`` holds the best epoch so far, with the provisional card."""

    def __init__(self, path: Path, *, half: bool) -> None:
        self.path = path
        self.half = half

    def epoch_completed(self, record: EpochRecord) -> None:
        if record.improved:
            save_checkpoint(self.path, record.weights, record.card, half=self.half)


def log_row(record: EpochRecord) -> dict:
    """One line of ``training_log.jsonl``: loss, the task's validation fields, lr, timing."""
    return {
        "epoch": record.epoch,
        "train_loss": record.train_loss,
        **record.validation.fields,
        "lr": record.lr,
        "seconds": round(record.seconds, 2),
        "images_per_s": round(record.images / record.train_seconds, 1)
        if record.train_seconds > 0
        else None,
        "best": record.improved,
        **(
            {"nonfinite_batches": record.nonfinite_batches}
            if record.nonfinite_batches is not None
            else {}
        ),
    }


class TrainingLog(Handler):
    """``training_log.jsonl``: one JSON object per epoch, rewritten atomically every epoch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.history: list[dict] = []

    def epoch_completed(self, record: EpochRecord) -> None:
        row = log_row(record)
        lines = [json.dumps(r, allow_nan=False) for r in (*self.history, row)]
        write_text_atomically(self.path, "\n".join(lines) + "\n")
        self.history.append(row)

    def load_state_dict(self, state: dict) -> None:
        """The rows of the epochs the state covers (a later, torn epoch is dropped)."""
        if not self.path.is_file():
            self.history = []
            return
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        self.history = [r for r in rows if r["epoch"] <= int(state["epoch"])]


class Progress(Handler):
    """A line per epoch under the progress bars."""

    def epoch_completed(self, record: EpochRecord) -> None:
        tqdm.write(
            f"epoch {record.epoch + 1}/{record.epochs}: train loss {record.train_loss:.4f}, "
            f"{record.validation.summary}{', ' if record.validation.summary else ''}"
            f"{record.monitor} {record.validation.value:.4f}{' (best)' if record.improved else ''}, "
            f"{record.seconds:.1f}s"
        )
