"""What a kind of model needs from training, and the registry the engine picks it from.

The engine (:mod:`cxr_core.training.engine`) owns everything the kinds of model share: the
epoch loop, exact resume, several processes, mixed precision, the weight average, the
learning-rate schedule and the end-of-epoch handlers. A :class:`TrainingTask` owns what differs:

* **build**: read its data (:meth:`~TrainingTask.prepare` returns the training set) and say
  how many output channels the network has; the engine creates the registered architecture;
* **loss**: :meth:`~TrainingTask.loss`;
* **validate**: score the model on the validation split, all processes together, and return
  the monitored metric (higher is better) with the fields of the epoch's log row;
* **finalise**: write the card and the evaluation of the best checkpoint.

A config's ``task:`` names the task; :func:`register_task` adds one (``docs/add-a-task.md``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.training.config import TrainConfig
from cxr_core.training.runtime import Runtime


@dataclass
class Validation:
    """One epoch's validation: the monitored value (higher is better; NaN when undefined), the
    fields the epoch's log row gets, and a few words for the progress line."""

    value: float
    fields: dict[str, Any] = field(default_factory=dict)
    summary: str = ""


def finite_or_none(value: float | None) -> float | None:
    """A number for JSON (which has no NaN or infinity): undefined values become null."""
    return float(value) if value is not None and math.isfinite(value) else None


class TrainingTask(ABC):
    """One kind of model, as the engine trains it; subclasses set ``monitor`` and fill the hooks.

    The engine calls, in order: the constructor (check the config; no data read yet),
    :meth:`prepare` (on every process), :meth:`build_model`, :meth:`loss`, then per epoch
    :meth:`validate` (on every process) and :meth:`card` (rank 0), and at the end
    :meth:`finalise` (rank 0).
    """

    name: str = ""  # set by register_task
    monitor: str = ""  # the log key of the monitored metric, e.g. val_dice

    def __init__(self, config: TrainConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime

    @property
    @abstractmethod
    def classes(self) -> tuple[str, ...]:
        """What the network outputs, one channel each (known once :meth:`prepare` has run)."""

    @abstractmethod
    def prepare(self) -> Dataset:
        """Read the data; return the training set, whose items are ``(input, target, index)``."""

    def build_model(self) -> nn.Module:
        """The configured architecture with one output per class (the engine seeds torch first)."""
        m = self.config.model
        return create_model(
            m.name, len(self.classes), weights=m.weights, in_chans=m.in_chans, dropout=m.dropout
        )

    @abstractmethod
    def loss(self) -> nn.Module:
        """``loss(logits, targets)``: logits as float32, targets as the training set gives them."""

    @abstractmethod
    def validate(self, model: nn.Module, loss: nn.Module) -> Validation:
        """Score ``model`` (in eval mode) on this process's share of validation, then combine."""

    @abstractmethod
    def card(self, training: dict, validation: dict) -> ModelCard:
        """The model card, given the engine's ``training`` summary and ``validation`` numbers."""

    @abstractmethod
    def finalise(self, best: Path, training: dict) -> Any:
        """Evaluate the best checkpoint, write ``eval/val`` and its final card; return the report
        (the task's own type: classification's ``EvaluationReport``, segmentation's dict)."""

    def headline(self, report: Any) -> str:
        """A line on the final validation for the terminal (empty: nothing beyond the metric)."""
        return ""

    def identity(self) -> dict[str, Any]:
        """What must not change between an interrupted run and its resumption."""
        return {
            "task": self.name,
            "architecture": self.config.model.name,
            "classes": list(self.classes),
            "manifest_fingerprint": self.fingerprint(),
        }

    @abstractmethod
    def fingerprint(self) -> str:
        """A short hash of the data and its split: changes whenever what the model sees changes."""

    def check_resume(self, state: dict, out_dir: Path) -> None:
        """Refuse to continue a run whose task, architecture, classes or data differ."""
        then = {"task": state.get("task", "classification"), **state}
        now = self.identity()
        if (then["task"], then["architecture"], list(then["classes"])) != (
            now["task"],
            now["architecture"],
            now["classes"],
        ):
            raise CheckpointError(
                f"cannot resume: {out_dir} holds a {then['architecture']} {then['task']} run over "
                f"{then['classes']}, but the config asks for {now['architecture']} {now['task']} over "
                f"{now['classes']}"
            )
        if then["manifest_fingerprint"] != now["manifest_fingerprint"]:
            raise CheckpointError(
                f"cannot resume: the dataset or its splits changed since the run in {out_dir} started "
                f"(manifest fingerprint {then['manifest_fingerprint']} then, "
                f"{now['manifest_fingerprint']} now)"
            )


_TASKS: dict[str, type[TrainingTask]] = {}


def register_task(name: str) -> Callable[[type[TrainingTask]], type[TrainingTask]]:
    """Class decorator: ``task: name`` in a config trains with this class."""

    def decorate(cls: type[TrainingTask]) -> type[TrainingTask]:
        if name in _TASKS:
            raise ValueError(f"training task {name!r} is registered twice")
        cls.name = name
        _TASKS[name] = cls
        return cls

    return decorate


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> type[TrainingTask]:
    try:
        return _TASKS[name]
    except KeyError:
        raise ConfigError(f"task: must be one of {', '.join(task_names())}, not {name!r}") from None
