"""What a reader needs first about one image: its findings in order, the calls, and how sure they are.

A table of 14 probabilities in fixed class order makes the reader hunt for the positives and
hides calls that sit on the threshold. :func:`summarise_findings` orders findings (positives
first, then by probability), marks borderline calls, gives one case-level abnormality score,
and for single-label (multiclass) models names the most probable class and the runner-up,
flagging near ties.

The gate's outcome shapes the summary: a refused image has no findings at all; an
out-of-domain one keeps its probabilities in reading order but calls nothing and marks nothing
borderline (``calls_withheld``) until the user scores it anyway.

Bands (absolute probability differences, documented in the dashboard):

- a multilabel call is *borderline* when ``|p - threshold|`` is at most ``BORDERLINE_FRACTION``
  of the threshold, and never more than ``BORDERLINE_BAND``: a small change in the image, the
  preprocessing or the threshold could flip it. The band scales with the threshold because
  operating points of rare findings sit near 0.05, where a fixed 0.05 band would flag every
  class;
- a multiclass result is a *near tie* when the two most probable classes differ by at most
  ``NEAR_TIE_MARGIN``.

Classes the model card flags (low count, no fitted threshold, AUROC not clearly above chance:
:func:`cxr_core.inference.class_flags.flagged_classes`) are passed as ``flagged``: they are
never called, never borderline and never set the abnormality score; the summary lists them apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cxr_core.data.labels import NO_FINDING
from cxr_core.inference.outcome import OUT_OF_DOMAIN, SCORED
from cxr_core.inference.predictor import Prediction

BORDERLINE_BAND = 0.05
BORDERLINE_FRACTION = 0.2
NEAR_TIE_MARGIN = 0.15
NORMAL_CLASSES = frozenset({"Normal", NO_FINDING})
"""Classes that state the absence of disease: never shown as a positive finding."""


@dataclass(frozen=True)
class Finding:
    """One class of one image: probability, operating threshold and the call at it."""

    name: str
    probability: float
    threshold: float
    positive: bool
    borderline: bool
    flag: str = ""  # why the model card distrusts this class (then never called); "" otherwise

    @property
    def above_threshold(self) -> bool:
        return self.probability >= self.threshold


@dataclass(frozen=True)
class FindingsSummary:
    """The findings of one image in reading order (positives first, then by probability).

    Multilabel: ``abnormality`` is the largest probability over the disease classes, with the
    class it belongs to and that class's threshold (its operating point); ``abnormal`` is whether
    any disease finding is called. Multiclass: ``most_probable`` and ``runner_up`` are
    ``(class, probability)``; ``near_tie`` flags a gap of at most ``NEAR_TIE_MARGIN``.
    ``outcome``, ``reason`` and ``scored_anyway`` are the input gate's, as in the prediction;
    a refused image has no findings and NaN scores.
    """

    name: str
    multilabel: bool
    findings: tuple[Finding, ...]
    abnormality: float
    abnormality_class: str
    abnormality_threshold: float
    abnormal: bool
    most_probable: tuple[str, float]
    runner_up: tuple[str, float] | None
    near_tie: bool
    outcome: str = SCORED
    reason: str = ""
    scored_anyway: bool = False

    @property
    def calls_withheld(self) -> bool:
        """Out of domain and not scored anyway: the probabilities are for reference only."""
        return self.outcome == OUT_OF_DOMAIN and not self.scored_anyway

    @property
    def positives(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.positive and f.name not in NORMAL_CLASSES)

    @property
    def borderline(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.borderline)

    @property
    def flagged(self) -> tuple[Finding, ...]:
        """Findings of classes the model card distrusts (never called), most probable first."""
        return tuple(f for f in self.findings if f.flag)


def borderline_band(
    threshold: float, band: float = BORDERLINE_BAND, fraction: float = BORDERLINE_FRACTION
) -> float:
    """Half-width of the borderline zone around ``threshold``: ``fraction`` of it, at most ``band``."""
    return min(band, fraction * threshold)


def is_borderline(probability: float, threshold: float, band: float = BORDERLINE_BAND) -> bool:
    """Whether a call lies within :func:`borderline_band` of its threshold (either side, inclusive)."""
    return abs(probability - threshold) <= borderline_band(threshold, band) + 1e-12


def summarise_findings(
    prediction: Prediction,
    *,
    multilabel: bool,
    band: float = BORDERLINE_BAND,
    tie_margin: float = NEAR_TIE_MARGIN,
    flagged: Mapping[str, str] | None = None,
) -> FindingsSummary:
    """Order, call and flag the findings of one :class:`Prediction` (see the module docstring)."""
    flagged = flagged or {}
    probs = prediction.probabilities
    gate = {
        "outcome": prediction.outcome,
        "reason": prediction.reason,
        "scored_anyway": prediction.scored_anyway,
    }
    if not probs:  # refused: nothing to order or call
        nan = float("nan")
        return FindingsSummary(
            prediction.name, multilabel, (), nan, "", nan, False, ("", nan), None, False, **gate
        )
    withheld = prediction.outcome == OUT_OF_DOMAIN and not prediction.scored_anyway
    ranked = sorted(probs, key=lambda c: (-probs[c], c))
    top, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    findings = [
        Finding(
            name=c,
            probability=probs[c],
            threshold=float(prediction.thresholds.get(c, np.nan)),
            positive=c in prediction.positive and c not in flagged,
            borderline=multilabel
            and not withheld
            and c not in flagged
            and is_borderline(probs[c], float(prediction.thresholds.get(c, np.nan)), band),
            flag=flagged.get(c, ""),
        )
        for c in ranked
    ]
    findings.sort(
        key=lambda f: (not (f.positive and f.name not in NORMAL_CLASSES), -f.probability, f.name)
    )
    disease = [c for c in ranked if c not in NORMAL_CLASSES and c not in flagged] or ranked
    worst = disease[0]
    return FindingsSummary(
        name=prediction.name,
        multilabel=multilabel,
        findings=tuple(findings),
        abnormality=probs[worst],
        abnormality_class=worst,
        abnormality_threshold=float(prediction.thresholds.get(worst, np.nan)),
        abnormal=any(
            c in prediction.positive for c in disease if c not in NORMAL_CLASSES | set(flagged)
        ),
        most_probable=(top, probs[top]),
        runner_up=(second, probs[second]) if second is not None else None,
        near_tie=second is not None and probs[top] - probs[second] <= tie_margin + 1e-12,
        **gate,
    )
