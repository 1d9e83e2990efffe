"""Scoring one film held in memory (a PACS retrieval, an upload, a worklist file) to a gate outcome.

``cxr predict`` streams folders through :meth:`Predictor.iter_predict_files`; the PACS round trip,
the worklist and the dashboard have one film's bytes at a time and need the same three things
back: the decoded film, the prediction (or why there is none) and the lung mask the gate used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cxr_core.data.imaging import ImageLimits, LoadedImage, load_image
from cxr_core.errors import CXRError
from cxr_core.inference.lungs import LungResult
from cxr_core.inference.predictor import Prediction, Predictor
from cxr_core.reporting.outcome import GateOutcome, outcome_of
from cxr_core.reporting.study import ReportContext, StudyResult, build_study_result

DEFAULT_LIMITS = ImageLimits()


@dataclass(frozen=True)
class ScoredFilm:
    """One film after the model: its outcome, prediction (None when unreadable; a refused
    film's has no probabilities), decoded image (None when unreadable) and the gate's lung
    result (None without a lung model)."""

    name: str
    outcome: GateOutcome
    prediction: Prediction | None = None
    image: LoadedImage | None = field(default=None, repr=False)
    lungs: LungResult | None = field(default=None, repr=False)


def score_film(
    predictor: Predictor,
    data: bytes,
    name: str,
    *,
    thresholds: Mapping[str, float] | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> ScoredFilm:
    """Decode and score one film's bytes; a bad film gives its outcome, never an exception.

    ``thresholds`` override the checkpoint's per class (a threshold set in force).
    """
    try:
        image = load_image(data, name=name, limits=limits)
    except CXRError as exc:
        return ScoredFilm(name, outcome_of(None, error=str(exc), readable=False))
    lungs = predictor.segment_lungs(image)
    probabilities, verdicts = predictor.assess([image], lungs=[lungs])
    used = predictor.resolve_thresholds(dict(thresholds) if thresholds else None)
    prediction = predictor.to_predictions(probabilities, [name], used, verdicts)[0]
    return ScoredFilm(name, outcome_of(prediction), prediction=prediction, image=image, lungs=lungs)


def film_study_result(
    predictor: Predictor, context: ReportContext, scored: ScoredFilm
) -> StudyResult:
    """The :class:`StudyResult` of a scored film (heatmaps of its called findings included)."""
    return build_study_result(
        predictor,
        context,
        name=scored.name,
        prediction=scored.prediction,
        outcome=scored.outcome,
        image=scored.image,
        lung_mask=scored.lungs.mask if scored.lungs is not None else None,
    )
