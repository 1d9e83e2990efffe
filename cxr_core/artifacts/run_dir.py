"""The one owner of what a checkpoint folder holds and where.

Training writes a run folder, evaluation adds ``eval/<split>/``, the dashboard and the CLI read
them back; every one of them asks :class:`RunDir` for a path instead of spelling file names, so
the layout documented in ``docs/architecture.md`` is defined here and nowhere else::

    <run>/model.safetensors         best weights + model card
    <run>/last.safetensors          last epoch's weights (not shipped)
    <run>/train_state.pt            resumable training state (not shipped)
    <run>/training_log.jsonl        one JSON object per epoch
    <run>/config.yaml               the training config as run
    <run>/eval/<split>/predictions.csv, report.json
    <run>/eval/<split>/scores.csv   segmentation models: per-image Dice/IoU/HD95 (no predictions.csv)
    <run>/thresholds/<set>.json, active.txt
    <run>/external.json             instead of model.safetensors: the card of predictions made elsewhere

An evaluation's predictions file is the one prediction table of
:mod:`cxr_core.artifacts.prediction_table`, with the truth in its ``label:<class>`` columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.artifacts.prediction_table import (
    LABEL_PREFIX,
    PROB_PREFIX,
    read_prediction_table,
)
from cxr_core.errors import DatasetError

MODEL_FILE = "model.safetensors"
EXTERNAL_FILE = "external.json"
LAST_FILE = "last.safetensors"
STATE_FILE = "train_state.pt"
LOG_FILE = "training_log.jsonl"
CONFIG_FILE = "config.yaml"
EVAL_DIR = "eval"
THRESHOLDS_DIR = "thresholds"
PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.json"
SCORES_FILE = "scores.csv"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run (checkpoint) folder."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_checkpoint(cls, checkpoint: str | Path) -> RunDir:
        return cls(Path(checkpoint).parent)

    @property
    def model(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def external(self) -> Path:
        """Model card of a run whose predictions were made by another tool (no weights here)."""
        return self.path / EXTERNAL_FILE

    @property
    def last(self) -> Path:
        return self.path / LAST_FILE

    @property
    def state(self) -> Path:
        return self.path / STATE_FILE

    @property
    def training_log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def thresholds(self) -> Path:
        return self.path / THRESHOLDS_DIR

    def eval_dir(self, split: str) -> Path:
        return self.path / EVAL_DIR / split

    def predictions(self, split: str) -> Path:
        return self.eval_dir(split) / PREDICTIONS_FILE

    def report(self, split: str) -> Path:
        return self.eval_dir(split) / REPORT_FILE

    def scores(self, split: str) -> Path:
        return self.eval_dir(split) / SCORES_FILE

    def eval_splits(self) -> tuple[str, ...]:
        """Splits with an evaluation (a predictions file or a report), sorted."""
        root = self.path / EVAL_DIR
        if not root.is_dir():
            return ()
        return tuple(
            sorted(
                p.name
                for p in root.iterdir()
                if p.is_dir() and ((p / PREDICTIONS_FILE).is_file() or (p / REPORT_FILE).is_file())
            )
        )


def label_column(name: str) -> str:
    return f"{LABEL_PREFIX}{name}"


def prob_column(name: str) -> str:
    return f"{PROB_PREFIX}{name}"


def split_arrays(
    predictions: pd.DataFrame, class_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a predictions frame as (n, classes) float arrays, in class order."""
    labels = predictions[[label_column(c) for c in class_names]].to_numpy(dtype=np.float64)
    probs = predictions[[prob_column(c) for c in class_names]].to_numpy(dtype=np.float64)
    return labels, probs


def load_predictions(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """An evaluation's ``predictions.csv`` (scored rows) and its class names, in order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"predictions file {path} does not exist; run `cxr evaluate` to create it"
        )
    table = read_prediction_table(path)
    frame, classes = table.scored().reset_index(drop=True), table.classes
    missing = [label_column(c) for c in classes if label_column(c) not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path} is not an evaluation's predictions file (it has no truth): missing columns {missing}"
        )
    return frame, classes
