"""What became of one image: the four outcomes every prediction path reports, and what each allows.

A classifier scores anything it is given, so every image that reaches a model first gets one of:

* ``scored``: a chest radiograph like the ones the model learned from; probabilities and calls;
* ``out_of_domain``: a real chest film unlike the model's training population (a child's film
  on an adult model, a lateral view, another source): probabilities are shown, but no finding
  is called positive until the user chooses *score anyway*, which is recorded with the result;
* ``refused``: not a chest radiograph (another modality or body part, a blank, noise, a photo, a
  document, corrupt pixels): no probabilities at all, only the reason;
* ``unreadable``: the file could not be decoded: no probabilities, the reason.

The library (:class:`~cxr_core.inference.predictor.Prediction`), ``cxr predict`` and the
dashboard all speak this vocabulary, so the same file gets the same outcome everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxr_core.artifacts.prediction_table import (
    OUT_OF_DOMAIN,
    OUTCOMES,
    REFUSED,
    SCORED,
    UNREADABLE,
)

WITH_PROBABILITIES = frozenset({SCORED, OUT_OF_DOMAIN})

OUTCOME_LABELS = {
    SCORED: "scored",
    OUT_OF_DOMAIN: "out of domain",
    REFUSED: "refused by the input gate",
    UNREADABLE: "unreadable",
}


@dataclass(frozen=True)
class GateVerdict:
    """The input gate's decision on one image.

    ``reason`` is one sentence a clinician can act on (empty when scored); ``warnings`` lists
    every check that fired, the reason's own sentence first.
    """

    outcome: str
    reason: str = ""
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; one of {', '.join(OUTCOMES)}")

    @property
    def has_probabilities(self) -> bool:
        """Whether the model's numbers may be shown at all (scored or out of domain)."""
        return self.outcome in WITH_PROBABILITIES


def calls_allowed(outcome: str, scored_anyway: bool) -> bool:
    """Whether findings may be called positive: always when scored, for an out-of-domain image
    only after the user chose to score it anyway, never without probabilities."""
    return outcome == SCORED or (outcome == OUT_OF_DOMAIN and scored_anyway)
