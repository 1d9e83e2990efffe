"""The input gate's outcome of one film as every deliverable (SR, PDF, worklist) reports it.

The vocabulary and the decision belong to :mod:`cxr_core.inference.outcome` and the
:class:`~cxr_core.inference.predictor.Predictor`: ``scored``: probabilities and calls;
``out_of_domain``: probabilities, but no positive calls unless the user chose to score anyway
(recorded); ``refused`` and ``unreadable``: no probabilities at all. :func:`outcome_of` reads
the Predictor's outcome off its prediction; this module decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxr_core.inference.outcome import (
    OUT_OF_DOMAIN,
    OUTCOME_LABELS,
    OUTCOMES,
    REFUSED,
    SCORED,
    UNREADABLE,
    WITH_PROBABILITIES,
    calls_allowed,
)
from cxr_core.inference.predictor import Prediction

__all__ = [
    "OUTCOMES",
    "OUTCOME_LABELS",
    "OUT_OF_DOMAIN",
    "REFUSED",
    "SCORED",
    "UNREADABLE",
    "GateOutcome",
    "outcome_of",
]


@dataclass(frozen=True)
class GateOutcome:
    """What the input gate decided about one film, why, and whether the user scored it anyway."""

    outcome: str
    reason: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    scored_anyway: bool = False

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown gate outcome {self.outcome!r}; expected one of {OUTCOMES}")

    @property
    def has_probabilities(self) -> bool:
        return self.outcome in WITH_PROBABILITIES

    @property
    def calls_allowed(self) -> bool:
        """Whether positive calls may be made: scored films, or out-of-domain ones scored anyway."""
        return calls_allowed(self.outcome, self.scored_anyway)


def outcome_of(
    prediction: Prediction | None, *, error: str = "", readable: bool = True
) -> GateOutcome:
    """The outcome the Predictor gave a film (its ``prediction``), or, for a film it never
    judged, why: ``error`` with ``readable`` telling a refusal from an undecodable file."""
    if prediction is not None:
        return GateOutcome(
            prediction.outcome,
            reason=prediction.reason,
            warnings=tuple(prediction.warnings),
            scored_anyway=prediction.scored_anyway,
        )
    return GateOutcome(REFUSED if readable else UNREADABLE, reason=error)
