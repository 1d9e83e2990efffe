"""The model card: what a model is, how it must be fed, and how it did.

The card travels as JSON inside the checkpoint (see :mod:`cxr_core.models.checkpoint`) and is
validated here, once, when it is built from that JSON, so every reader of a checkpoint gets a
card whose classes, thresholds, test-time augmentation and ensemble members agree.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import torch

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, CXRError
from cxr_core.metrics import DEFAULT_THRESHOLD
from cxr_core.models.ensemble import MemberSpec
from cxr_core.models.tta import TTA_MODES
from cxr_core.version import __version__

FORMAT_VERSION = 1
CALIBRATION_METHOD = "temperature"
ENSEMBLE = "ensemble"  # architecture name of a model card whose weights are several members (cxr_core.models.ensemble)
# A crafted card must fail with a clear message, not a RecursionError or a huge allocation:
# bundled cards are ~15 kB and 6 levels deep, so these bounds leave room without risk.
MAX_CARD_BYTES = 1_000_000
MAX_CARD_DEPTH = 32
# Network input sizes a radiograph model can sensibly use; 100000 would allocate ~120 GB.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048
WEIGHT_DTYPES = ("float32", "float16")  # what save_checkpoint writes for floating-point tensors
# architecture name of the card of predictions made by another tool (cxr_core.evaluation.external)
EXTERNAL = "external"


def software_versions() -> dict[str, str]:
    import torchvision

    return {
        "cxr_core": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class ModelCard:
    """What a model is, what it was trained on, how it did, and how it must be fed."""

    architecture: str
    num_classes: int
    label_space: dict
    preprocess: dict
    in_chans: int = 3
    dropout: float = 0.0
    thresholds: dict[str, float] = field(default_factory=dict)
    threshold_method: str = ""
    tta: str = "none"  # test-time augmentation of the validation numbers; the Predictor's default
    # Temperature scaling applied to every probability (cxr_core.models.tta.calibrate):
    # {"method": "temperature", "temperature": [T per class, or one T for multiclass], "fitted_on": "val", ...};
    # empty = uncalibrated (cards written before calibration existed).
    calibration: dict = field(default_factory=dict)
    members: list[dict] = field(
        default_factory=list
    )  # architecture "ensemble": one MemberSpec dict per member
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    provenance: str = ""
    intended_use: str = "Research and education only. Not a medical device; not for diagnosis or treatment decisions."
    versions: dict = field(default_factory=software_versions)
    created: str = field(default_factory=_utc_now)
    weights_dtype: str = "float32"
    gate: dict = field(
        default_factory=dict
    )  # input-gate reference statistics (cxr_core.inference.gate)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.architecture, str) or not self.architecture:
            raise CheckpointError(f"model card names no architecture ({self.architecture!r})")
        if type(self.num_classes) is not int or self.num_classes < 1:
            raise CheckpointError(
                f"model card's num_classes must be a positive whole number, not {self.num_classes!r}"
            )
        for name in ("label_space", "training", "data", "validation", "gate"):
            if not isinstance(getattr(self, name), dict):
                raise CheckpointError(
                    f"model card field {name!r} must be a JSON object, not {type(getattr(self, name)).__name__}"
                )
        names = self.label_space.get("classes")
        if not isinstance(names, list) or not all(isinstance(c, str) and c for c in names):
            raise CheckpointError(
                f"the model card's label space classes must be a list of class names, not {names!r}"
            )
        try:
            self._label_space = LabelSpace.from_dict(self.label_space)
        except (CXRError, ValueError, TypeError) as exc:
            raise CheckpointError(f"the model card's label space is invalid ({exc})") from None
        classes = self._label_space.classes
        if len(classes) != self.num_classes:
            raise CheckpointError(
                f"model card says {self.num_classes} classes but its label space lists {len(classes)}: {list(classes)}"
            )
        # The card of another tool's predictions (cxr evaluate --predictions) has no weights to feed.
        self._preprocess = (
            None
            if self.architecture == EXTERNAL and not self.preprocess
            else _checked_preprocess(self.preprocess)
        )
        if self._preprocess is not None and self._preprocess.in_chans != self.in_chans:
            raise CheckpointError(
                f"the model card's preprocessing produces {self._preprocess.in_chans} channel(s) but the model "
                f"expects {self.in_chans}; the checkpoint is inconsistent, re-export it"
            )
        if (
            not isinstance(self.dropout, (int, float))
            or isinstance(self.dropout, bool)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise CheckpointError(
                f"model card's dropout must be a number in [0, 1), not {self.dropout!r}"
            )
        self._check_members_and_settings()
        self._check_thresholds(classes)
        self._check_calibration()

    def _check_members_and_settings(self) -> None:
        """Ensemble members, test-time augmentation and weight type this cxr_core can run."""
        if not isinstance(self.members, list) or (self.architecture == ENSEMBLE) != bool(
            self.members
        ):
            raise CheckpointError(
                f"model card of architecture {self.architecture!r} lists {len(self.members)} ensemble members; "
                "an ensemble needs its members and only an ensemble has them"
            )
        for member in self.members:
            if not isinstance(member, dict):
                raise CheckpointError(
                    f"ensemble member entry {member!r} is not a JSON object; the model card is damaged"
                )
            _check_image_size(
                "an ensemble member's input_size", MemberSpec.from_dict(member).input_size
            )
        if self.tta not in TTA_MODES:
            raise CheckpointError(
                f"model card asks for test-time augmentation {self.tta!r}, which this cxr_core does not know "
                f"(known: {', '.join(TTA_MODES)}); upgrade cxr_core"
            )
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise CheckpointError(
                f"model card declares weights of type {self.weights_dtype!r}; only "
                f"{', '.join(WEIGHT_DTYPES)} are supported"
            )

    def _check_thresholds(self, classes: tuple[str, ...]) -> None:
        """Decision thresholds: numbers in [0, 1] for classes the model predicts."""
        if not isinstance(self.thresholds, dict):
            raise CheckpointError(
                "model card's thresholds must be a JSON object of class -> number"
            )
        unknown = sorted(set(self.thresholds) - set(classes))
        if unknown:
            raise CheckpointError(
                f"model card has thresholds for classes it does not predict: {unknown}"
            )
        for cls, value in self.thresholds.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not 0.0 <= value <= 1.0
            ):
                raise CheckpointError(
                    f"model card's threshold for '{cls}' is {value!r}; a decision threshold must be a number "
                    "between 0 and 1. Re-run `cxr evaluate` or fix the threshold set."
                )

    def _check_calibration(self) -> None:
        if not self.calibration:
            return
        if (
            not isinstance(self.calibration, dict)
            or self.calibration.get("method") != CALIBRATION_METHOD
        ):
            raise CheckpointError(
                f"model card calibration must be {{'method': {CALIBRATION_METHOD!r}, 'temperature': [...]}}; "
                f"got {self.calibration!r}"
            )
        values = self.calibration.get("temperature")
        multilabel = self.label_space.get("task") == "multilabel"
        expected = self.num_classes if multilabel else 1
        ok = (
            isinstance(values, list)
            and len(values) == expected
            and all(
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v > 0
                for v in values
            )
        )
        if not ok:
            raise CheckpointError(
                f"model card calibration needs {expected} positive finite temperature(s) "
                f"({'one per class' if multilabel else 'one for the model'}); got {values!r}"
            )

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.label_space["classes"])

    def get_label_space(self) -> LabelSpace:
        """The label space, parsed once when the card was validated."""
        return self._label_space

    def get_preprocess(self) -> PreprocessConfig:
        """The preprocessing, parsed once when the card was validated."""
        if self._preprocess is None:
            raise CheckpointError(
                "this model card describes predictions made by another tool; it has no weights to feed images to"
            )
        return self._preprocess

    def threshold_vector(self) -> list[float] | None:
        """Thresholds in class order, or None when the card has none (multiclass argmax)."""
        if not self.thresholds:
            return None
        return [float(self.thresholds.get(c, DEFAULT_THRESHOLD)) for c in self.classes]

    def temperature(self) -> list[float] | None:
        """The temperatures probabilities are scaled by, or None for an uncalibrated model."""
        return [float(v) for v in self.calibration["temperature"]] if self.calibration else None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        if not isinstance(data, dict):
            raise CheckpointError("model card is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError(
                "model card has no integer format_version; the file was not written by cxr"
            )
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version} is newer than this cxr_core understands "
                f"({FORMAT_VERSION}); upgrade cxr_core (installed {__version__}) to load it"
            )
        known = {f.name for f in fields(cls)}
        required = {"architecture", "num_classes", "label_space", "preprocess"}
        missing = sorted(required - set(data))
        if missing:
            raise CheckpointError(f"model card lacks required fields {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        """Parse and validate a card; sizes and nesting are bounded before the JSON parser runs."""
        if not isinstance(text, str) or len(text) > MAX_CARD_BYTES:
            raise CheckpointError(
                f"model card is {len(text):,} characters, over the {MAX_CARD_BYTES:,} limit; the "
                "file was not written by cxr"
            )
        depth = json_depth(text)
        if depth > MAX_CARD_DEPTH:
            raise CheckpointError(
                f"model card is nested {depth} levels deep (limit {MAX_CARD_DEPTH}); the file was not written by cxr"
            )
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, ValueError) as exc:
            raise CheckpointError(f"model card is not valid JSON ({exc})") from None
        return cls.from_dict(data)


def json_depth(text: str) -> int:
    """Deepest ``[``/``{`` nesting of JSON text, counted without parsing (strings skipped).

    ``json.loads`` recurses once per level, so a card of 100 000 nested brackets would raise
    RecursionError; counting first keeps that a plain CheckpointError.
    """
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _check_image_size(what: str, size: Any) -> None:
    if type(size) is not int or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise CheckpointError(
            f"model card's {what} is {size!r}; it must be a whole number of pixels between "
            f"{MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE}"
        )


def _checked_preprocess(settings: Any) -> PreprocessConfig:
    if not settings:
        raise CheckpointError(
            "the model card has no preprocessing settings, so images cannot be prepared the way the model "
            "was trained. Re-export the checkpoint with cxr train/export."
        )
    if not isinstance(settings, dict):
        raise CheckpointError("the model card's preprocessing settings are not a JSON object")
    for key in ("cache_size", "input_size"):
        if key in settings:
            _check_image_size(f"preprocessing {key}", settings[key])
    try:
        return PreprocessConfig.from_dict(settings)
    except (CXRError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"the model card's preprocessing settings are invalid ({exc})"
        ) from None
