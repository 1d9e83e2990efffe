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

import torch

import cxr_core
from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError
from cxr_core.metrics import DEFAULT_THRESHOLD
from cxr_core.models.tta import TTA_MODES

FORMAT_VERSION = 1
CALIBRATION_METHOD = "temperature"
ENSEMBLE = "ensemble"  # architecture name of a model card whose weights are several members (cxr_core.models.ensemble)


def software_versions() -> dict[str, str]:
    import torchvision

    return {
        "cxr_core": cxr_core.__version__,
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
    members: list[dict] = field(default_factory=list)  # architecture "ensemble": one MemberSpec dict per member
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    provenance: str = ""
    intended_use: str = (
        "Research and education only. Not a medical device; not for diagnosis or treatment decisions."
    )
    versions: dict = field(default_factory=software_versions)
    created: str = field(default_factory=_utc_now)
    weights_dtype: str = "float32"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        classes = self.label_space.get("classes", [])
        if len(classes) != self.num_classes:
            raise CheckpointError(
                f"model card says {self.num_classes} classes but its label space lists {len(classes)}: {classes}"
            )
        if (self.architecture == ENSEMBLE) != bool(self.members):
            raise CheckpointError(
                f"model card of architecture {self.architecture!r} lists {len(self.members)} ensemble members; "
                "an ensemble needs its members and only an ensemble has them"
            )
        if self.tta not in TTA_MODES:
            raise CheckpointError(
                f"model card asks for test-time augmentation {self.tta!r}, which this cxr_core does not know "
                f"(known: {', '.join(TTA_MODES)}); upgrade cxr_core"
            )
        unknown = sorted(set(self.thresholds) - set(classes))
        if unknown:
            raise CheckpointError(f"model card has thresholds for classes it does not predict: {unknown}")
        self._check_calibration()

    def _check_calibration(self) -> None:
        if not self.calibration:
            return
        if not isinstance(self.calibration, dict) or self.calibration.get("method") != CALIBRATION_METHOD:
            raise CheckpointError(
                f"model card calibration must be {{'method': {CALIBRATION_METHOD!r}, 'temperature': [...]}}; "
                f"got {self.calibration!r}"
            )
        values = self.calibration.get("temperature")
        multilabel = self.label_space.get("task") == "multilabel"
        expected = self.num_classes if multilabel else 1
        ok = isinstance(values, list) and len(values) == expected and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values
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
        return LabelSpace.from_dict(self.label_space)

    def get_preprocess(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.preprocess)

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
    def from_dict(cls, data: dict) -> "ModelCard":
        if not isinstance(data, dict):
            raise CheckpointError("model card is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError("model card has no integer format_version; the file was not written by cxr")
        if version > FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version} is newer than this cxr_core understands "
                f"({FORMAT_VERSION}); upgrade cxr_core (installed {cxr_core.__version__}) to load it"
            )
        known = {f.name for f in fields(cls)}
        required = {"architecture", "num_classes", "label_space", "preprocess"}
        missing = sorted(required - set(data))
        if missing:
            raise CheckpointError(f"model card lacks required fields {missing}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"model card is not valid JSON ({exc})") from None
        return cls.from_dict(data)
