"""Label spaces and the harmonisation of finding names across datasets.

NIH writes ``Effusion`` and ``Pleural_Thickening`` where CheXpert writes ``Pleural Effusion``;
models trained on one and evaluated on the other must agree on names, so every manifest
uses the canonical spellings below and every adapter maps through :func:`canonical_name`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxr_core.errors import UnknownClassError
from cxr_core.utils.tasks import Task

NO_FINDING = "No Finding"

# Alternative spelling (normalised: lower case, separators collapsed) -> canonical name.
_ALIASES: dict[str, str] = {
    "effusion": "Pleural Effusion",
    "pleural effusion": "Pleural Effusion",
    "pleural thickening": "Pleural Thickening",
    "no finding": NO_FINDING,
    "no findings": NO_FINDING,
    "normal": "Normal",
    "covid 19": "COVID-19",
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "enlarged cardiomediastinum": "Enlarged Cardiomediastinum",
    "lung opacity": "Lung Opacity",
    "lung lesion": "Lung Lesion",
    "pleural other": "Pleural Other",
    "support devices": "Support Devices",
}


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip()).lower()


def canonical_name(name: str) -> str:
    """Canonical spelling of a finding name; unknown names keep their own spelling, tidied.

    ``Pleural_Thickening`` -> ``Pleural Thickening``; ``Effusion`` -> ``Pleural Effusion``;
    ``cardiomegaly`` -> ``Cardiomegaly``; a folder called ``PNEUMONIA`` -> ``Pneumonia``.
    """
    key = _normalise(name)
    if key in _ALIASES:
        return _ALIASES[key]
    for known in _KNOWN_CANONICAL:
        if _normalise(known) == key:
            return known
    tidy = re.sub(r"[\s_]+", " ", name.strip())
    return tidy.title() if tidy.isupper() or tidy.islower() else tidy


@dataclass(frozen=True)
class LabelSpace:
    """The classes a model predicts and whether they are exclusive.

    ``multilabel``: each class is an independent yes/no finding (NIH, CheXpert).
    ``multiclass``: exactly one class per image (Normal vs Pneumonia).
    """

    name: str
    classes: tuple[str, ...]
    task: Task = Task.MULTILABEL

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task.parse(self.task))
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"label space {self.name!r} has duplicate classes: {self.classes}")
        if not self.classes:
            raise ValueError(f"label space {self.name!r} has no classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def multilabel(self) -> bool:
        return self.task is Task.MULTILABEL

    def index(self, name: str) -> int:
        """Position of a class, accepting any known spelling (``Effusion`` finds ``Pleural Effusion``)."""
        canonical = canonical_name(name)
        for i, cls in enumerate(self.classes):
            if cls == name or cls == canonical:
                return i
        raise UnknownClassError(
            f"'{name}' is not a class of the {self.name} label space; "
            f"its classes are: {', '.join(self.classes)}"
        )

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "task": self.task.value}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSpace":
        try:
            return cls(name=str(data["name"]), classes=tuple(data["classes"]), task=data["task"])
        except KeyError as exc:
            raise ValueError(f"label space description lacks {exc}") from None


NIH14 = LabelSpace(
    "nih14",
    (
        "Atelectasis", "Cardiomegaly", "Pleural Effusion", "Infiltration", "Mass", "Nodule",
        "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
        "Pleural Thickening", "Hernia",
    ),
)

CHEXPERT14 = LabelSpace(
    "chexpert14",
    (
        NO_FINDING, "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
        "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
        "Pleural Other", "Fracture", "Support Devices",
    ),
)

SIX_DISEASES = LabelSpace(
    "six_diseases",
    ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumonia"),
)

_KNOWN_CANONICAL: tuple[str, ...] = tuple(dict.fromkeys(NIH14.classes + CHEXPERT14.classes))

KNOWN_LABEL_SPACES: dict[str, LabelSpace] = {ls.name: ls for ls in (NIH14, CHEXPERT14, SIX_DISEASES)}
