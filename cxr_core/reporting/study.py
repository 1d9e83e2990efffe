"""One scored film as every deliverable sees it: findings, gate outcome, model, overlay and lungs.

The SR, the Secondary Capture, the SEG, the PDF and the worklist all read a
:class:`StudyResult`, built once by :func:`build_study_result` from the Predictor's output, so a
probability, a threshold or a call is decided in one place and printed the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.data.imaging import LoadedImage
from cxr_core.errors import ReportError
from cxr_core.inference.explain import DEFAULT_METHOD, explain_batch
from cxr_core.inference.findings import NORMAL_CLASSES
from cxr_core.inference.lungs import LungSegmenter
from cxr_core.inference.predictor import Prediction, Predictor
from cxr_core.models.card import ModelCard
from cxr_core.reporting.outcome import GateOutcome


@dataclass(frozen=True)
class ModelIdentity:
    """Which model made a result: what a PACS administrator needs to trace it.

    ``version`` is the time the model card was written (a retrained model gets a new one);
    ``weights_sha256`` is the checksum of the weights themselves.
    """

    name: str
    version: str
    weights_sha256: str
    card: ModelCard = field(repr=False, compare=False)

    @classmethod
    def of_checkpoint(
        cls, path: str | os.PathLike[str], card: ModelCard, name: str | None = None
    ) -> ModelIdentity:
        """The identity of the checkpoint at ``path`` (named after its folder unless ``name``)."""
        path = Path(path)
        return cls(
            name=name or path.resolve().parent.name,
            version=card.created,
            weights_sha256=checkpoint_digest(path),
            card=card,
        )


@dataclass(frozen=True)
class ThresholdSource:
    """Where the decision thresholds came from: a named set and how it was chosen."""

    name: str
    method: str = ""
    notes: str = ""

    def describe(self) -> str:
        """One line for a report: 'threshold set "card" (specificity=0.9)'."""
        label = "model card" if self.name == "card" else f'threshold set "{self.name}"'
        return label + (f" ({self.method})" if self.method else "")


@dataclass(frozen=True)
class FindingCall:
    """One class of one film: probability, threshold and whether it is called positive.

    ``threshold`` is None for single-label (multiclass) models, whose call is the most probable
    class. Refused and unreadable films have no findings at all.
    """

    name: str
    probability: float
    threshold: float | None
    called: bool


@dataclass(frozen=True)
class StudyResult:
    """Everything the deliverables of one film need (see the module docstring)."""

    name: str
    outcome: GateOutcome
    findings: tuple[FindingCall, ...]
    model: ModelIdentity
    thresholds: ThresholdSource
    multilabel: bool
    image: LoadedImage | None = field(default=None, repr=False)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    heatmap_method: str = DEFAULT_METHOD
    lung_mask: np.ndarray | None = field(default=None, repr=False)
    lung_model: ModelIdentity | None = None

    @property
    def called(self) -> tuple[FindingCall, ...]:
        """Findings called positive, most probable first; 'Normal' / 'No Finding' left out."""
        found = [f for f in self.findings if f.called and f.name not in NORMAL_CLASSES]
        return tuple(sorted(found, key=lambda f: (-f.probability, f.name)))

    @property
    def abnormality(self) -> float | None:
        """The largest probability of a disease class (None without probabilities)."""
        disease = [f.probability for f in self.findings if f.name not in NORMAL_CLASSES]
        return max(disease) if disease else None


def finding_calls(
    prediction: Prediction | None, outcome: GateOutcome, *, multilabel: bool
) -> tuple[FindingCall, ...]:
    """The model's classes in order with their calls; none are called when the outcome forbids it."""
    if prediction is None or not outcome.has_probabilities:
        return ()
    return tuple(
        FindingCall(
            name=name,
            probability=float(probability),
            threshold=float(prediction.thresholds[name]) if multilabel else None,
            called=outcome.calls_allowed and name in prediction.positive,
        )
        for name, probability in prediction.probabilities.items()
    )


def called_heatmaps(
    predictor: Predictor,
    image: LoadedImage,
    names: Sequence[str],
    method: str = DEFAULT_METHOD,
) -> dict[str, np.ndarray]:
    """One heatmap per called finding, at the image's resolution (empty when nothing is called)."""
    if not names:
        return {}
    maps = explain_batch(predictor, [image] * len(names), list(names), method)
    return dict(zip(names, maps))


@dataclass(frozen=True)
class ReportContext:
    """What every film of one run is reported with: the model, where its thresholds came from,
    the lung model (when it runs) and the heatmap method of the overlays."""

    model: ModelIdentity
    thresholds: ThresholdSource
    lung_model: ModelIdentity | None = None
    method: str = DEFAULT_METHOD

    @classmethod
    def of_run(
        cls,
        predictor: Predictor,
        checkpoint: str | os.PathLike[str],
        *,
        lungs: LungSegmenter | None = None,
        thresholds: ThresholdSource | None = None,
        name: str | None = None,
    ) -> ReportContext:
        """The context of a run of ``predictor`` (loaded from ``checkpoint``) at the card's
        thresholds unless ``thresholds`` names another set."""
        if predictor.card is None:
            raise ReportError("reports need a model card: load the Predictor from a checkpoint")
        card = predictor.card
        return cls(
            model=ModelIdentity.of_checkpoint(checkpoint, card, name=name),
            thresholds=thresholds or ThresholdSource("card", card.threshold_method),
            lung_model=(
                ModelIdentity.of_checkpoint(lungs.checkpoint.path, lungs.checkpoint.card)
                if lungs is not None
                else None
            ),
        )


def build_study_result(
    predictor: Predictor,
    context: ReportContext,
    *,
    name: str,
    prediction: Prediction | None,
    outcome: GateOutcome,
    image: LoadedImage | None = None,
    lung_mask: np.ndarray | None = None,
) -> StudyResult:
    """A film's :class:`StudyResult`, with a heatmap of each called finding when ``image`` is given."""
    multilabel = predictor.label_space.multilabel
    result = StudyResult(
        name=name,
        outcome=outcome,
        findings=finding_calls(prediction, outcome, multilabel=multilabel),
        model=context.model,
        thresholds=context.thresholds,
        multilabel=multilabel,
        image=image,
        heatmap_method=context.method,
        lung_mask=lung_mask,
        lung_model=context.lung_model if lung_mask is not None else None,
    )
    if image is None:
        return result
    names = [f.name for f in result.called]
    return replace(result, heatmaps=called_heatmaps(predictor, image, names, context.method))
