"""The input gate's outcome for one film, in the vocabulary every deliverable shares.

``scored``: probabilities and calls. ``out_of_domain``: probabilities, but no positive calls
unless the user chose to score anyway (recorded). ``refused`` (the gate refused the image) and
``unreadable`` (the file could not be decoded): no probabilities at all. ``reason`` is one
sentence a clinician can act on; ``warnings`` are the gate's warnings.

:func:`derive_gate_outcome` is the single place the outcome is worked out from the gate's
refusals and warnings as the Predictor reports them today; when the Predictor reports the
outcome itself, that function is the one to replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SCORED = "scored"
OUT_OF_DOMAIN = "out_of_domain"
REFUSED = "refused"
UNREADABLE = "unreadable"
OUTCOMES = (SCORED, OUT_OF_DOMAIN, REFUSED, UNREADABLE)

OUTCOME_LABELS = {
    SCORED: "scored",
    OUT_OF_DOMAIN: "out of domain",
    REFUSED: "refused by the input gate",
    UNREADABLE: "unreadable",
}


@dataclass(frozen=True)
class GateOutcome:
    """What the input gate decided about one film, and why."""

    outcome: str
    reason: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)
    scored_anyway: bool = False

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown gate outcome {self.outcome!r}; expected one of {OUTCOMES}")

    @property
    def has_probabilities(self) -> bool:
        return self.outcome in (SCORED, OUT_OF_DOMAIN)

    @property
    def calls_allowed(self) -> bool:
        """Whether positive calls may be made: scored films, or out-of-domain ones scored anyway."""
        return self.outcome == SCORED or (self.outcome == OUT_OF_DOMAIN and self.scored_anyway)


def derive_gate_outcome(
    *, warnings: Sequence[str] = (), error: str = "", readable: bool = True
) -> GateOutcome:
    """The outcome of one film from today's gate: its refusal ``error`` or its ``warnings``.

    ``readable`` tells a refusal (the file decodes but the gate refuses the image) from an
    unreadable file; it only matters when ``error`` is set. Any gate warning makes a scored
    film out of domain: each one says the model never learned from films like it.
    """
    if error:
        return GateOutcome(REFUSED if readable else UNREADABLE, reason=error)
    if warnings:
        return GateOutcome(OUT_OF_DOMAIN, reason=warnings[0], warnings=tuple(warnings))
    return GateOutcome(SCORED)
