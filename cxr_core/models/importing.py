"""Bringing a model trained elsewhere into a cxr checkpoint.

Users arrive with plain state dicts: a torchvision or timm network they fine-tuned, a CheXNet
reimplementation (``densenet121.features…``, ``classifier.0`` inside ``DataParallel``), a
torchxrayvision DenseNet (``classifier`` straight on the features, 1-channel stem, inputs in
[-1024, 1024], ``op_threshs`` operating points). :func:`map_state_dict` renames such keys onto
the registry's layout (every architecture there ends in ``Dropout + Linear`` at its ``head``),
and :func:`import_weights` writes a checkpoint with a model card saying where the weights came
from. Files are read with :func:`cxr_core.models.weights.read_state_dict` (``torch.load(
weights_only=True)`` or safetensors), so importing cannot run code hidden in a pickle.

Anything that does not fit is refused with the layers named: a partly loaded network would
score images with random filters and look merely mediocre, which nobody would notice.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig, range_mean_std
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.models.registry import create_model, get_model_spec
from cxr_core.models.weights import (
    StateDict,
    densenet_legacy_keys,
    describe_misfit,
    read_state_dict,
)

logger = logging.getLogger(__name__)

# Wrappers other code puts around a network's own names: DataParallel/DDP, CheXNet's
# ``self.densenet121``, torchxrayvision's ``ResNet.model``, Lightning-style ``model``/``net``.
_WRAPPER_PREFIXES: tuple[str, ...] = (
    "module.",
    "model.",
    "densenet121.",
    "resnet50.",
    "net.",
    "backbone.",
)
OPERATING_POINTS_KEY = (
    "op_threshs"  # torchxrayvision's per-class operating points, a buffer in its state dict
)
_OPTIONAL_SUFFIX = "num_batches_tracked"

# torchxrayvision: 1-channel 224 px input, gray mapped onto [-1024, 1024] (xrv.datasets.normalize).
XRV_RANGE: tuple[float, float] = (-1024.0, 1024.0)
PREPROCESS_PRESETS: tuple[str, ...] = ("imagenet", "xrv")


@dataclass(frozen=True)
class KeyMapReport:
    """What :func:`map_state_dict` did to a foreign state dict, for the user and the model card."""

    steps: tuple[str, ...]
    in_chans: int
    num_outputs: int
    operating_points: dict[str, float] = field(default_factory=dict)
    defaulted: tuple[
        str, ...
    ] = ()  # tensors absent from the file that only count batches (BatchNorm bookkeeping)

    def to_dict(self) -> dict:
        return {
            "steps": list(self.steps),
            "in_chans": self.in_chans,
            "num_outputs": self.num_outputs,
            "operating_points": dict(self.operating_points),
            "defaulted": list(self.defaulted),
        }


@dataclass(frozen=True)
class ImportResult:
    """The written checkpoint, its card and how the keys were mapped."""

    path: Path
    card: ModelCard
    report: KeyMapReport


def _strip_wrappers(state: StateDict, target: set[str], steps: list[str]) -> StateDict:
    """Remove wrapper prefixes that every key carries (and that our names lack)."""
    changed = True
    while changed:
        changed = False
        keys = [k for k in state if k != OPERATING_POINTS_KEY]
        for prefix in _WRAPPER_PREFIXES:
            if (
                keys
                and all(k.startswith(prefix) for k in keys)
                and not any(k.startswith(prefix) for k in target)
            ):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                steps.append(f"removed the prefix '{prefix}' from every key")
                changed = True
                break
    return state


def _rename_head(state: StateDict, head: str, target: set[str], steps: list[str]) -> StateDict:
    """Map a bare ``Linear`` head (``classifier.weight``, torchvision/timm/torchxrayvision) or CheXNet's
    ``Sequential(Linear, Sigmoid)`` (``classifier.0.weight``) onto our ``Dropout + Linear`` (``.1``)."""
    ours = f"{head}.1"
    if f"{ours}.weight" not in target or f"{ours}.weight" in state:
        return state
    for theirs in (head, f"{head}.0"):
        weight = state.get(f"{theirs}.weight")
        if weight is not None and weight.ndim == 2 and f"{theirs}.weight" not in target:
            steps.append(f"renamed the head {theirs}.* to {ours}.*")
            return {
                (ours + k[len(theirs) :] if k in (f"{theirs}.weight", f"{theirs}.bias") else k): v
                for k, v in state.items()
            }
    return state


def map_state_dict(
    state: StateDict, architecture: str, classes: tuple[str, ...]
) -> tuple[StateDict, KeyMapReport]:
    """``state`` renamed to ``architecture``'s keys and checked against it, tensor by tensor.

    Raises :class:`CheckpointError` listing missing, unexpected and wrongly shaped tensors (by
    layer name) when the weights do not fit, including a head whose number of outputs differs
    from ``classes``.
    """
    spec = get_model_spec(architecture)
    steps: list[str] = []
    state = dict(state)
    points = state.pop(OPERATING_POINTS_KEY, None)
    if points is not None:
        steps.append(f"took the operating points '{OPERATING_POINTS_KEY}' out of the weights")
    with torch.device("meta"):
        probe = create_model(architecture, max(1, len(classes)), in_chans=3)
    target_names = set(probe.state_dict())
    state = _strip_wrappers(state, target_names, steps)
    state = _rename_head(state, spec.head, target_names, steps)
    legacy = densenet_legacy_keys(state)
    if legacy.keys() != state.keys():
        steps.append("renamed torchvision's 2017 DenseNet keys (norm.1 -> norm1)")
        state = legacy

    stem = state.get(f"{spec.first_conv}.weight")
    in_chans = int(stem.shape[1]) if stem is not None and stem.ndim == 4 else 3
    if in_chans not in (1, 3):
        raise CheckpointError(
            f"the stem {spec.first_conv}.weight takes {in_chans} input channels; only 1 (gray) or 3 are supported"
        )
    head_key = f"{spec.head}.1.weight"
    head = state.get(head_key)
    outputs = int(head.shape[0]) if head is not None and head.ndim == 2 else -1
    if outputs != -1 and outputs != len(classes):
        raise CheckpointError(
            f"the head layer {head_key} has {outputs} outputs but {len(classes)} classes were given "
            f"({', '.join(classes)}); list exactly one class name per output, in the model's order"
        )

    with torch.device("meta"):
        target = create_model(architecture, len(classes), in_chans=in_chans).state_dict()
    missing = [k for k in target if k not in state and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in state if k not in target]
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and tuple(v.shape) != tuple(target[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"the weights do not fit a {architecture} model after mapping their keys "
            f"({'; '.join(steps) or 'no renaming applied'}): {describe_misfit(missing, unexpected, mismatched)}. "
            f"Check --arch, or that the file holds the whole network"
        )
    defaulted = tuple(k for k in target if k not in state)
    operating = _operating_points(points, classes)
    return state, KeyMapReport(tuple(steps), in_chans, len(classes), operating, defaulted)


def _operating_points(points: torch.Tensor | None, classes: tuple[str, ...]) -> dict[str, float]:
    """torchxrayvision's ``op_threshs`` as per-class thresholds (NaN = none for that class).

    torchxrayvision rescales probabilities so each operating point lands on 0.5 (``op_norm``);
    that map is monotone, so thresholding the raw sigmoid at the operating point makes the
    same calls and leaves every ranking metric unchanged.
    """
    if points is None:
        return {}
    values = points.detach().float().reshape(-1).tolist()
    if len(values) != len(classes):
        raise CheckpointError(
            f"'{OPERATING_POINTS_KEY}' holds {len(values)} values but the model has {len(classes)} outputs"
        )
    return {c: float(v) for c, v in zip(classes, values) if math.isfinite(v) and 0.0 <= v <= 1.0}


def preset_preprocess(
    name: str, *, in_chans: int, input_size: int | None = None, cache_size: int | None = None
) -> PreprocessConfig:
    """Preprocessing for a named family of models: ``imagenet`` (ImageNet mean/std) or ``xrv``
    (torchxrayvision: 1-channel 224 px, gray mapped onto [-1024, 1024])."""
    if name == "imagenet":
        size = input_size or 224
        return PreprocessConfig(
            cache_size=cache_size or max(256, size), input_size=size, in_chans=in_chans
        )
    if name == "xrv":
        if in_chans != 1:
            raise ConfigError(
                "torchxrayvision models take 1-channel input, but these weights have a 3-channel stem"
            )
        mean, std = range_mean_std(*XRV_RANGE)
        size = input_size or 224
        return PreprocessConfig(
            cache_size=cache_size or max(256, size), input_size=size, mean=mean, std=std, in_chans=1
        )
    raise ConfigError(
        f"unknown preprocessing preset {name!r}; choose one of: {', '.join(PREPROCESS_PRESETS)}"
    )


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, streamed (weights files run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_weights(
    weights: str | Path,
    architecture: str,
    label_space: LabelSpace,
    out_file: str | Path,
    *,
    preprocess: str | PreprocessConfig = "imagenet",
    input_size: int | None = None,
) -> ImportResult:
    """Read a foreign ``.pth``/``.pt``/``.safetensors`` state dict safely, map its keys onto
    ``architecture`` and write ``out_file`` as a cxr checkpoint whose card records the source
    file and its SHA-256, the renaming done and any operating points found.

    ``preprocess`` is a preset name (:data:`PREPROCESS_PRESETS`) or a full config; its channel
    count must match the weights' stem.
    """
    weights = Path(weights)
    state, report = map_state_dict(read_state_dict(weights), architecture, label_space.classes)
    config = (
        preset_preprocess(preprocess, in_chans=report.in_chans, input_size=input_size)
        if isinstance(preprocess, str)
        else preprocess
    )
    if config.in_chans != report.in_chans:
        raise ConfigError(
            f"the preprocessing gives {config.in_chans}-channel input but the weights' stem takes {report.in_chans}"
        )
    model = create_model(architecture, label_space.num_classes, in_chans=report.in_chans)
    model.load_state_dict({**model.state_dict(), **state}, strict=True)
    digest = file_sha256(weights)
    card = ModelCard(
        architecture=architecture,
        num_classes=label_space.num_classes,
        label_space=label_space.to_dict(),
        preprocess=config.to_dict(),
        in_chans=report.in_chans,
        thresholds=dict(report.operating_points),
        threshold_method=f"imported operating points ({OPERATING_POINTS_KEY})"
        if report.operating_points
        else "",
        training={"imported": {"source": str(weights), "sha256": digest, **report.to_dict()}},
        provenance=f"imported from {weights.name}, sha256 {digest}",
    )
    path = save_checkpoint(out_file, model.state_dict(), card)
    for step in report.steps:
        logger.info("%s: %s", weights.name, step)
    logger.info(
        "imported %s as a %s with %d classes -> %s",
        weights.name,
        architecture,
        label_space.num_classes,
        path,
    )
    return ImportResult(path=Path(path), card=card, report=report)
