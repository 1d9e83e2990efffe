"""Label spaces and the harmonisation of finding names across datasets.

NIH writes ``Effusion`` and ``Pleural_Thickening`` where CheXpert writes ``Pleural Effusion``;
models trained on one and evaluated on the other must agree on names, so every manifest
uses the canonical spellings below and every adapter maps through :func:`canonical_name`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cxr_core.errors import UnknownClassError
from cxr_core.utils.tasks import Task

logger = logging.getLogger(__name__)

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
    # NIH box list, VinDr-CXR, the NIH expert labels, Open-i / PadChest terms
    "infiltrate": "Infiltration",
    "infiltrates": "Infiltration",
    "pulmonary fibrosis": "Fibrosis",
    "nodule/mass": "Nodule/Mass",
    "nodule or mass": "Nodule/Mass",
    "airspace opacity": "Lung Opacity",
    "aortic enlargement": "Aortic Enlargement",
    "other lesion": "Other Lesion",
    "ild": "ILD",
    "tuberculosis": "Tuberculosis",
    "viral pneumonia": "Viral Pneumonia",
    "bacterial pneumonia": "Bacterial Pneumonia",
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
    def from_dict(cls, data: dict) -> LabelSpace:
        try:
            return cls(name=str(data["name"]), classes=tuple(data["classes"]), task=data["task"])
        except KeyError as exc:
            raise ValueError(f"label space description lacks {exc}") from None


NIH14 = LabelSpace(
    "nih14",
    (
        "Atelectasis",
        "Cardiomegaly",
        "Pleural Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
        "Consolidation",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural Thickening",
        "Hernia",
    ),
)

CHEXPERT14 = LabelSpace(
    "chexpert14",
    (
        NO_FINDING,
        "Enlarged Cardiomediastinum",
        "Cardiomegaly",
        "Lung Opacity",
        "Lung Lesion",
        "Edema",
        "Consolidation",
        "Pneumonia",
        "Atelectasis",
        "Pneumothorax",
        "Pleural Effusion",
        "Pleural Other",
        "Fracture",
        "Support Devices",
    ),
)

SIX_DISEASES = LabelSpace(
    "six_diseases",
    ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumonia"),
)

# torchxrayvision's 18 outputs (``xrv.datasets.default_pathologies``), in its order, canonically spelt:
# its DenseNet/ResNet models predict these whichever dataset they were trained on.
XRV18 = LabelSpace(
    "xrv18",
    (
        "Atelectasis",
        "Consolidation",
        "Infiltration",
        "Pneumothorax",
        "Edema",
        "Emphysema",
        "Fibrosis",
        "Pleural Effusion",
        "Pneumonia",
        "Pleural Thickening",
        "Cardiomegaly",
        "Nodule",
        "Mass",
        "Hernia",
        "Lung Lesion",
        "Fracture",
        "Lung Opacity",
        "Enlarged Cardiomediastinum",
    ),
)

_KNOWN_CANONICAL: tuple[str, ...] = tuple(
    dict.fromkeys(NIH14.classes + CHEXPERT14.classes + XRV18.classes)
)

KNOWN_LABEL_SPACES: dict[str, LabelSpace] = {
    ls.name: ls for ls in (NIH14, CHEXPERT14, SIX_DISEASES, XRV18)
}


def is_known_finding(name: str) -> bool:
    """Whether ``name`` spells a finding of a known label space (so a typo is not mistaken for one)."""
    canonical = canonical_name(name)
    return canonical in _KNOWN_CANONICAL or canonical in _ALIASES.values()


@dataclass(frozen=True)
class ClassMapping:
    """How a model's classes line up with a dataset's, by harmonised name.

    ``shared`` pairs (model class, dataset class) in dataset order; a model is scored on
    those alone. ``model_only`` (predicted, not labelled here) and ``data_only`` (labelled,
    not predicted) are kept so every report says what was left out instead of dropping it.
    """

    shared: tuple[tuple[str, str], ...]
    model_only: tuple[str, ...]
    data_only: tuple[str, ...]

    @property
    def identical(self) -> bool:
        """Same classes with the same spellings in the same order: nothing to map."""
        return not self.model_only and not self.data_only and all(m == d for m, d in self.shared)

    @property
    def data_classes(self) -> tuple[str, ...]:
        return tuple(d for _, d in self.shared)

    @property
    def model_classes(self) -> tuple[str, ...]:
        return tuple(m for m, _ in self.shared)

    def to_dict(self) -> dict:
        return {
            "scored": [d for _, d in self.shared],
            "renamed": {m: d for m, d in self.shared if m != d},
            "model_only": list(self.model_only),
            "data_only": list(self.data_only),
        }


def match_classes(
    model_classes: Sequence[str], data_classes: Sequence[str], *, what: str = "the model"
) -> ClassMapping:
    """Pair ``model_classes`` with ``data_classes`` through :func:`canonical_name`.

    Like torchxrayvision's ``relabel_dataset``: ``Effusion`` meets ``Pleural Effusion``;
    classes on one side only are listed (and logged), never silently dropped. Raises
    :class:`UnknownClassError` when nothing is shared, since there would be nothing to score.
    """
    by_name: dict[str, str] = {}
    for m in model_classes:
        by_name.setdefault(canonical_name(m), m)
    shared = tuple(
        (by_name[canonical_name(d)], d) for d in data_classes if canonical_name(d) in by_name
    )
    used = {m for m, _ in shared}
    mapping = ClassMapping(
        shared=shared,
        model_only=tuple(m for m in model_classes if m not in used),
        data_only=tuple(d for d in data_classes if canonical_name(d) not in by_name),
    )
    if not shared:
        raise UnknownClassError(
            f"{what} predicts {', '.join(model_classes)} and the dataset is labelled with {', '.join(data_classes)}: "
            "no class is shared, even after harmonising names, so there is nothing to score"
        )
    if mapping.model_only or mapping.data_only:
        logger.warning(
            "scoring %s on the %d classes it shares with the dataset; not scored: %s",
            what,
            len(shared),
            "; ".join(
                part
                for part in (
                    f"predicted but not labelled here: {', '.join(mapping.model_only)}"
                    if mapping.model_only
                    else "",
                    f"labelled but not predicted: {', '.join(mapping.data_only)}"
                    if mapping.data_only
                    else "",
                )
                if part
            ),
        )
    return mapping
