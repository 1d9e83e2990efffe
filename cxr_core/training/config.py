"""Training configuration: a tree of dataclasses read from YAML.

A misspelt key silently falling back to a default is how a run trains for the wrong thing, so
every unknown key, wrong type or impossible value is a :class:`ConfigError` naming the key
(``optim.lr``) and what to write instead. Relative paths are resolved against ``base_dir``
(the current directory unless given; run ``cxr train`` from the repository root for the
shipped ``configs/``), and the resolved config is written next to the checkpoint so a run
can always be repeated.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from cxr_core.data.formats import get_format, list_formats
from cxr_core.data.formats.registry import check_options
from cxr_core.data.lung_mask import DEFAULT_DILATION, MAX_DILATION
from cxr_core.errors import ConfigError
from cxr_core.evaluation.run import DEFAULT_OPERATING_POINT
from cxr_core.metrics import parse_threshold_spec
from cxr_core.models.tta import TTA_MODES
from cxr_core.utils.settings import check_known_keys


@dataclass
class DataConfig:
    path: str = ""
    format: str = "auto"
    adapter: dict[str, Any] = field(
        default_factory=dict
    )  # extra keyword arguments for the dataset adapter
    val: float = 0.15
    test: float = 0.0
    split_seed: int = 0
    # keep splits the dataset defines (e.g. the NIH official test list); False re-deals train/val
    keep_splits: bool = True
    cache_dir: str = ".cxr_cache"
    cache_size: int = 256
    # A subset of the dataset's classes, in this order (any known spelling: Effusion finds Pleural Effusion).
    classes: list[str] | None = None
    views: list[str] | None = (
        None  # keep only these views (PA, AP, LATERAL, frontal); default: every image
    )
    # Several datasets merged into one manifest instead of `path`: each {path, format, adapter, name}.
    sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ModelConfig:
    name: str = "small_cnn"
    weights: str | None = None  # None | "imagenet" | path to a .safetensors checkpoint
    in_chans: int = 3
    dropout: float = 0.0
    finetune: str | list[str] = "all"  # "all" | "head" | "last:N" | list of parameter prefixes


@dataclass
class PreprocessSection:
    input_size: int = 224
    mean: list[float] | None = (
        None  # None: the normalisation the architecture's pretrained weights expect
    )
    std: list[float] | None = None
    # Black out everything outside the lungs (found by a lung segmentation model on the cached
    # image) before the classifier sees it, in training and at inference (cxr_core.data.lung_mask).
    lung_mask: bool = False
    lung_checkpoint: str | None = None  # the lung model; None: the bundled checkpoints/lungs
    lung_dilation: float = DEFAULT_DILATION  # share of the image side the lung mask grows by


@dataclass
class LossConfig:
    kind: str = "auto"  # auto: bce for multilabel, ce for multiclass; or bce | ce | focal
    pos_weight: bool = False  # multilabel: weight positives by negatives/positives per class
    class_weight: bool = False  # multiclass: inverse-frequency class weights


@dataclass
class OptimConfig:
    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32  # per process and per step; under torchrun the global batch is larger (see global_batch_size)
    grad_accum: int = 1
    # Images per optimizer step over all processes. When set, batch_size is derived from it
    # (global / (processes * grad_accum)), so lr and warm-up keep their meaning on any number of GPUs.
    global_batch_size: int | None = None


@dataclass
class ScheduleConfig:
    name: str = "plateau"  # plateau | cosine | constant
    warmup_epochs: float = 0.0
    patience: int = 2
    factor: float = 0.5
    min_lr: float = 1e-6


@dataclass
class EarlyStoppingConfig:
    patience: int | None = (
        5  # epochs without improvement of the monitored metric; None: never stop early
    )
    min_delta: float = 0.0


@dataclass
class EMAConfig:
    decay: float = 0.999


@dataclass
class EvalConfig:
    n_boot: int = 1000
    batch_size: int = 64
    tta: str = "none"  # test-time augmentation of the final validation and of the shipped card (cxr_core.models.tta)
    # Multilabel operating point stored in the card, cross-fitted on validation: max_f1, youden,
    # sensitivity=0.9, specificity=0.95, fixed=0.5 (cxr_core.metrics.parse_threshold_spec).
    operating_point: str = DEFAULT_OPERATING_POINT


TASK_CLASSIFICATION = "classification"
TASK_SEGMENTATION = "segmentation"
SEGMENTATION_LOSS = "dice_bce"


@dataclass
class TrainConfig:
    # a registered training task (cxr_core.training.task): classification | segmentation
    task: str = TASK_CLASSIFICATION
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessSection = field(default_factory=PreprocessSection)
    augment: dict[str, Any] = field(
        default_factory=dict
    )  # keyword arguments of cxr_core.data.dataset.AugmentConfig
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    ema: EMAConfig | None = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    epochs: int = 10
    seed: int = 0
    num_workers: int | str = (
        2  # DataLoader workers per process, or auto: from the CPU cores this process may use
    )
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on GPUs with native bf16, else fp16; float32 on CPU) | bf16 | fp16 | off
    channels_last: bool = True  # NHWC activations: faster convolutions on CUDA and on CPU (oneDNN)
    out_dir: str = "runs/train"
    half_weights: bool = (
        False  # store model.safetensors as float16 (bundled models must be <= 50 MB)
    )
    provenance: str = ""
    intended_use: str = ""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: dict, *, base_dir: str | Path | None = None) -> TrainConfig:
        if data.get("amp") is False:  # YAML 1.1 reads a bare `amp: off` as false
            data = {**data, "amp": "off"}
        config = _build(cls, data, "")
        config.validate()
        return config.resolved(base_dir) if base_dir is not None else config

    @classmethod
    def from_yaml(cls, path: str | Path, *, base_dir: str | Path | None = None) -> TrainConfig:
        """Read a YAML config; relative paths resolve against ``base_dir`` (default: current directory)."""
        data = _read_yaml(path)
        try:
            return cls.from_dict(data, base_dir=base_dir if base_dir is not None else Path.cwd())
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def resolved(self, base_dir: str | Path) -> TrainConfig:
        """A copy whose data path, cache dir, output dir and weight file are absolute."""
        base = Path(base_dir)

        def absolute(p: str) -> str:
            return str((base / p).resolve()) if p and not Path(p).is_absolute() else p

        out = _build(TrainConfig, self.to_dict(), "")
        out.data.path = absolute(out.data.path)
        out.data.sources = [{**src, "path": absolute(src["path"])} for src in out.data.sources]
        out.data.cache_dir = absolute(out.data.cache_dir)
        out.out_dir = absolute(out.out_dir)
        if out.model.weights not in (None, "imagenet"):
            out.model.weights = absolute(out.model.weights)
        if out.preprocess.lung_checkpoint:
            out.preprocess.lung_checkpoint = absolute(out.preprocess.lung_checkpoint)
        return out

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        _check_data_source(self.data, self.task)
        _need(
            0.0 <= self.data.val < 1.0,
            "data.val",
            f"fraction must be in [0, 1), got {self.data.val}",
        )
        _need(
            0.0 <= self.data.test < 1.0,
            "data.test",
            f"fraction must be in [0, 1), got {self.data.test}",
        )
        _need(
            self.data.val + self.data.test < 1.0,
            "data.val",
            "val + test fractions leave no training images",
        )
        _need(
            self.data.val > 0.0,
            "data.val",
            "must be > 0: model selection and thresholds need a validation split",
        )
        _need(
            self.data.cache_size >= 16,
            "data.cache_size",
            f"must be >= 16 pixels, got {self.data.cache_size}",
        )
        _need(
            self.preprocess.input_size >= 16,
            "preprocess.input_size",
            f"must be >= 16, got {self.preprocess.input_size}",
        )
        _need(
            self.preprocess.input_size <= self.data.cache_size,
            "preprocess.input_size",
            f"({self.preprocess.input_size}) cannot exceed data.cache_size "
            f"({self.data.cache_size}); upsampling cached images loses detail silently",
        )
        _check_model(self.model, self.preprocess)
        _check_lung_mask(self.preprocess, self.task)
        if self.task == TASK_SEGMENTATION:
            _need(
                self.loss.kind in ("auto", SEGMENTATION_LOSS),
                "loss.kind",
                f"a segmentation model trains with auto or {SEGMENTATION_LOSS} (Dice + BCE), not {self.loss.kind!r}",
            )
        else:
            _need(
                self.loss.kind in ("auto", "bce", "ce", "focal"),
                "loss.kind",
                f"must be auto, bce, ce or focal, not {self.loss.kind!r}",
            )
        _check_optim(self.optim)
        _check_schedule(self.schedule, self.early_stopping, self.ema)
        _check_eval(self.eval)
        _check_run(self)
        _check_finetune(self.model.finetune)
        if self.augment:
            from cxr_core.data.dataset import AugmentConfig

            check_known_keys(AugmentConfig, self.augment, "setting", "augment.")


@dataclass
class EnsembleConfig:
    """Recipe of an ensemble: the members' own training configs, then how to validate the whole.

    ``cxr ensemble`` trains each member (unless its ``out_dir`` already holds that finished run),
    averages their logits, and scores the result on the members' shared validation split.
    """

    members: list[str] = field(default_factory=list)  # training config files, one per member
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # bootstrap seed of the final validation
    out_dir: str = "runs/ensemble"
    half_weights: bool = (
        False  # store the combined weights as float16 (bundled models must be <= 50 MB)
    )
    provenance: str = ""
    intended_use: str = ""

    @classmethod
    def from_yaml(cls, path: str | Path, *, base_dir: str | Path | None = None) -> EnsembleConfig:
        """Read a recipe; member configs and out_dir resolve against ``base_dir`` (default: cwd)."""
        data = _read_yaml(path)
        try:
            config = _build(cls, data, "")
            _need(
                len(config.members) >= 2,
                "members",
                f"an ensemble needs at least two member configs, got {len(config.members)}",
            )
            _check_eval(config.eval)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        config.members = [str((base / m).resolve()) for m in config.members]
        config.out_dir = str((base / config.out_dir).resolve())
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_SOURCE_KEYS = ("path", "format", "adapter", "name")


def _check_data_source(data: DataConfig, task: str) -> None:
    """One dataset (``path``) or several merged (``sources``), named formats that exist."""
    if not data.sources:
        _need(bool(data.path), "data.path", "is required (folder or label file of the dataset)")
        kind, what = (
            ("masks", "images with masks") if task == TASK_SEGMENTATION else ("labels", "labels")
        )
        _need(
            data.format == "auto" or data.format in list_formats(kind),
            "data.format",
            f"{task} reads {what}: use auto or one of {', '.join(list_formats(kind))}, not {data.format!r}",
        )
        if data.format != "auto":
            _check_adapter(data.format, data.adapter, kind, "data.adapter")
        return
    _need(
        not data.path,
        "data.path",
        "and data.sources exclude each other: list every dataset in sources",
    )
    _need(task != TASK_SEGMENTATION, "data.sources", "merging is for classification datasets")
    _need(len(data.sources) >= 2, "data.sources", "lists the datasets to merge: give at least two")
    for i, src in enumerate(data.sources):
        key = f"data.sources[{i}]"
        unknown = sorted(set(src) - set(_SOURCE_KEYS))
        _need(not unknown, key, f"unknown key(s) {unknown}; a source has {', '.join(_SOURCE_KEYS)}")
        _need(isinstance(src.get("path"), str) and bool(src["path"]), f"{key}.path", "is required")
        fmt = src.get("format", "auto")
        _need(
            fmt == "auto" or fmt in list_formats("labels"),
            f"{key}.format",
            f"must be auto or one of {', '.join(list_formats('labels'))}, not {fmt!r}",
        )
        _need(isinstance(src.get("adapter", {}), dict), f"{key}.adapter", "must be a mapping")
        if fmt != "auto":
            _check_adapter(fmt, src.get("adapter", {}), "labels", f"{key}.adapter")


def _check_adapter(fmt: str, adapter: dict, kind: str, key: str) -> None:
    try:
        check_options(get_format(fmt), adapter, kind)
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _need(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _check_model(model: ModelConfig, preprocess: PreprocessSection) -> None:
    _need(model.in_chans in (1, 3), "model.in_chans", f"must be 1 or 3, got {model.in_chans}")
    _need(0.0 <= model.dropout < 1.0, "model.dropout", f"must be in [0, 1), got {model.dropout}")
    for key, stats in (("preprocess.mean", preprocess.mean), ("preprocess.std", preprocess.std)):
        _need(
            stats is None or len(stats) == 3,
            key,
            "needs 3 values (one per RGB channel; gray input uses the first)",
        )


def _check_optim(optim: OptimConfig) -> None:
    _need(
        optim.name in ("adam", "adamw", "nadam"),
        "optim.name",
        f"must be adam, adamw or nadam, not {optim.name!r}",
    )
    _need(optim.lr > 0, "optim.lr", f"must be > 0, got {optim.lr}")
    _need(optim.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {optim.weight_decay}")
    _need(optim.batch_size >= 1, "optim.batch_size", f"must be >= 1, got {optim.batch_size}")
    _need(optim.grad_accum >= 1, "optim.grad_accum", f"must be >= 1, got {optim.grad_accum}")
    gb = optim.global_batch_size
    _need(
        gb is None or gb >= optim.grad_accum,
        "optim.global_batch_size",
        f"must be null or at least optim.grad_accum ({optim.grad_accum}), got {gb}",
    )


def _check_schedule(
    schedule: ScheduleConfig, early_stopping: EarlyStoppingConfig, ema: EMAConfig | None
) -> None:
    _need(
        schedule.name in ("plateau", "cosine", "constant"),
        "schedule.name",
        f"must be plateau, cosine or constant, not {schedule.name!r}",
    )
    _need(schedule.warmup_epochs >= 0, "schedule.warmup_epochs", "must be >= 0")
    _need(
        0.0 < schedule.factor < 1.0, "schedule.factor", f"must be in (0, 1), got {schedule.factor}"
    )
    _need(schedule.patience >= 0, "schedule.patience", "must be >= 0")
    _need(schedule.min_lr >= 0, "schedule.min_lr", "must be >= 0")
    es = early_stopping.patience
    _need(es is None or es >= 1, "early_stopping.patience", f"must be >= 1 or null, got {es}")
    _need(ema is None or 0.0 < ema.decay < 1.0, "ema.decay", "must be in (0, 1)")


def _check_run(config: TrainConfig) -> None:
    """Length, processes, device, precision and output of a run."""
    _need(config.epochs >= 1, "epochs", f"must be >= 1, got {config.epochs}")
    workers = config.num_workers
    _need(
        workers == "auto" or (isinstance(workers, int) and workers >= 0),
        "num_workers",
        f"must be auto or a whole number >= 0, not {workers!r}",
    )
    _need(
        config.device in ("auto", "cpu", "cuda") or config.device.startswith("cuda:"),
        "device",
        f"must be auto, cpu, cuda or cuda:N, not {config.device!r}",
    )
    _need(
        config.amp in ("auto", "bf16", "fp16", "off"),
        "amp",
        f"must be auto, bf16, fp16 or off, not {config.amp!r}",
    )
    _need(bool(config.out_dir), "out_dir", "is required")


def _check_finetune(finetune: str | list[str]) -> None:
    if isinstance(finetune, str):
        ok = finetune in ("all", "head") or (
            finetune.startswith("last:") and finetune[5:].isdigit()
        )
        _need(
            ok,
            "model.finetune",
            f"must be all, head, last:N or a list of parameter prefixes, not {finetune!r}",
        )


def _check_lung_mask(section: PreprocessSection, task: str) -> None:
    """Lung settings only mean something for a classifier that asks for lung masking."""
    if not section.lung_mask:
        for key, value, default in (
            ("lung_checkpoint", section.lung_checkpoint, None),
            ("lung_dilation", section.lung_dilation, DEFAULT_DILATION),
        ):
            _need(
                value == default,
                f"preprocess.{key}",
                "is set but preprocess.lung_mask is false; set lung_mask: true to mask the lungs, or remove it",
            )
        return
    _need(
        task != TASK_SEGMENTATION,
        "preprocess.lung_mask",
        "masks the lungs before a classifier; a segmentation model (such as the lung model itself) must see "
        "whole images, so set it to false for task: segmentation",
    )
    _need(
        0.0 <= section.lung_dilation <= MAX_DILATION,
        "preprocess.lung_dilation",
        f"is the share of the image side the lung mask grows by, in [0, {MAX_DILATION}]; got {section.lung_dilation} "
        f"(default {DEFAULT_DILATION})",
    )


def _check_eval(section: EvalConfig) -> None:
    """The final-validation settings, shared by training configs and ensemble recipes."""
    _need(section.n_boot >= 0, "eval.n_boot", "must be >= 0")
    _need(section.tta in TTA_MODES, "eval.tta", f"must be one of: {', '.join(TTA_MODES)}")
    _need(section.batch_size >= 1, "eval.batch_size", "must be >= 1")
    try:
        parse_threshold_spec(section.operating_point)
    except ConfigError as exc:
        raise ConfigError(f"eval.operating_point: {exc}") from None


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data:, model:, ...)")
    return data


_SECTION_TYPES = {
    DataConfig,
    ModelConfig,
    PreprocessSection,
    LossConfig,
    OptimConfig,
    ScheduleConfig,
    EarlyStoppingConfig,
    EMAConfig,
    EvalConfig,
    TrainConfig,
}


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    check_known_keys(cls, data, "setting", prefix)
    kwargs = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[-1] if len(errors) == 1 else f"{key}: unexpected value {value!r}")
    if hint in _SECTION_TYPES:
        return _build(hint, {} if value is None else value, f"{key}.")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be text, got {value!r}")
        return value
    return value


def load_config(
    path: str | Path, *, overrides: dict | None = None, base_dir: str | Path | None = None
) -> TrainConfig:
    """Read a YAML config and apply dotted overrides such as ``{"epochs": 3, "out_dir": "runs/x"}``."""
    config = TrainConfig.from_yaml(path, base_dir=base_dir)
    if not overrides:
        return config
    data = config.to_dict()
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return TrainConfig.from_dict(data, base_dir=base_dir if base_dir is not None else Path.cwd())
