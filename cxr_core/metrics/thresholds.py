"""Choosing one operating threshold per class.

Candidates are the scores actually observed for cases with a known label of that class (a
case is called positive when ``score >= threshold``), so every choice is a point on that
class's ROC curve. Rules for ties and edges:

* ``max_f1`` / ``youden``: the candidate with the highest F1 / Youden's J; among equally good
  candidates the highest threshold (fewest positive calls) wins.
* ``sensitivity``: the highest threshold whose sensitivity is still >= ``value``.
* ``specificity``: the lowest threshold whose specificity is >= ``value``; when even the top
  score misses it (the top-scored case is a negative and ``value`` demands no false positives)
  nothing is called positive.
* ``fixed``: ``value`` as given (one number, or one per class).

The threshold returned is not the chosen score itself but the midpoint between it and the
next distinct score observed below it (over all cases of the class, unknown labels
included), so it calls exactly the same cases positive. A threshold equal to an observed score
makes that case's decision hang on the last bit of its score: another CPU kernel, batch size
or library version moves it across, and a reproduced sensitivity differs (0.8370 vs 0.8478
for one bundled model). At the midpoint a score has to move by half the gap to its neighbour
to flip; that protects against 1e-6 noise unless two distinct observed scores are themselves
within 2e-6 of each other, which no threshold could separate robustly. Where there is no
neighbour (everything called positive, or nothing) the threshold lies :data:`EDGE_MARGIN`
beyond the extreme score.

The result is NaN for a class where the rule is undefined: no known positives (max_f1,
youden, sensitivity) or no known negatives (youden, specificity).

:func:`parse_threshold_spec` turns the strings used in configs and on the command line
(``max_f1``, ``youden``, ``sensitivity=0.9``, ``specificity=0.95``, ``fixed=0.5``) into a
:class:`ThresholdSpec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cxr_core.errors import ConfigError
from cxr_core.metrics._inputs import MetricInputError, check_pair, class_thresholds
from cxr_core.metrics.ranking import rank_columns

MAX_F1 = "max_f1"
YOUDEN = "youden"
SENSITIVITY = "sensitivity"
SPECIFICITY = "specificity"
FIXED = "fixed"

THRESHOLD_METHODS: tuple[str, ...] = (MAX_F1, YOUDEN, SENSITIVITY, SPECIFICITY, FIXED)

METHOD_LABELS: dict[str, str] = {
    MAX_F1: "Maximise F1",
    YOUDEN: "Maximise Youden's J (sensitivity + specificity - 1)",
    SENSITIVITY: "Highest threshold reaching a target sensitivity",
    SPECIFICITY: "Lowest threshold reaching a target specificity",
    FIXED: "Fixed threshold",
}

METHODS_NEEDING_VALUE: frozenset[str] = frozenset({SENSITIVITY, SPECIFICITY, FIXED})

# How far beyond the extreme observed score a threshold lies when there is no neighbouring
# score on the other side; far above 1e-6 numerical noise, small next to any score spread.
EDGE_MARGIN = 1e-3


def _last_true(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: index of the last True and whether there is one."""
    n = mask.shape[1]
    return n - 1 - np.argmax(mask[:, ::-1], axis=1), mask.any(axis=1)


def _best_highest(objective: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row: the last (highest-threshold) index among candidates with the maximal objective."""
    masked = np.where(candidate, objective, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    return _last_true(candidate & (masked == best))[0]


def _check_value(method: str, value: object, n_classes: int) -> np.ndarray | float:
    if value is None:
        raise MetricInputError(
            f"threshold method {method!r} needs a value (e.g. 0.9 for {method} >= 90%)"
        )
    if method == FIXED:
        values = class_thresholds(value, n_classes)
        if not np.all(np.isfinite(values)):
            raise MetricInputError("fixed thresholds must be finite numbers")
        return values
    target = float(np.asarray(value, dtype=np.float64))
    if not 0.0 <= target <= 1.0:
        raise MetricInputError(
            f"target {method} must be between 0 and 1 (e.g. 0.9 for 90%); got {target}"
        )
    return target


def _between_scores(sorted_scores: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per class: a threshold making the same ``score >= t`` calls as ``observed`` on every
    score of ``sorted_scores`` (C, N ascending), halfway to the neighbouring scores."""
    n = sorted_scores.shape[1]
    out = np.full(observed.shape, np.nan)
    for c in np.nonzero(~np.isnan(observed))[0]:
        column = sorted_scores[c]
        at = int(np.searchsorted(column, observed[c], side="left"))
        lower = column[at - 1] if at > 0 else None  # highest score called negative
        upper = column[at] if at < n else None  # lowest score called positive
        if lower is None:
            out[c] = upper - EDGE_MARGIN
        elif upper is None:
            out[c] = lower + EDGE_MARGIN
        else:
            middle = lower + (upper - lower) / 2
            # Adjacent floats have no number between them: keep the score that is called positive.
            out[c] = middle if lower < middle <= upper else upper
    return out


def select_thresholds(
    y_true: object, y_score: object, method: str, value: object = None
) -> np.ndarray:
    """One threshold per class (C,) by ``method``, midway between observed scores.

    See the module docstring for the tie rules and why the threshold is not an observed score.
    """
    if method not in THRESHOLD_METHODS:
        raise MetricInputError(
            f"unknown threshold method {method!r}; choose one of {', '.join(THRESHOLD_METHODS)}"
        )
    labels, scores = check_pair(y_true, y_score)
    n_classes = labels.shape[1]
    target = _check_value(method, value, n_classes) if method in METHODS_NEEDING_VALUE else None
    if method == FIXED:
        return np.asarray(target, dtype=np.float64)

    r = rank_columns(labels, scores)
    n_pos, n_neg = r.n_pos[:, None], r.n_neg[:, None]
    known = (r.pos + r.neg) > 0
    # Counts when the threshold is the score at each sorted position (its tie group included).
    fn = np.take_along_axis(np.cumsum(r.pos, axis=1) - r.pos, r.start, axis=1)
    tn = np.take_along_axis(np.cumsum(r.neg, axis=1) - r.neg, r.start, axis=1)
    tp, fp = n_pos - fn, n_neg - tn
    rows = np.arange(n_classes)
    with np.errstate(divide="ignore", invalid="ignore"):
        sensitivity, specificity = tp / n_pos, tn / n_neg
        if method == MAX_F1:
            idx = _best_highest(2 * tp / (2 * tp + fp + fn), known)
            defined = r.n_pos > 0
        elif method == YOUDEN:
            idx = _best_highest(sensitivity + specificity - 1.0, known)
            defined = (r.n_pos > 0) & (r.n_neg > 0)
        elif method == SENSITIVITY:
            idx, _ = _last_true(known & (sensitivity >= target))
            defined = r.n_pos > 0
        else:
            reaching = known & (specificity >= target)
            idx = np.argmax(reaching, axis=1)
            top_known = np.where(known, r.scores, -np.inf).max(axis=1)
            above_top = np.nextafter(top_known, np.inf)  # calls only scores above every known one
            chosen = np.where(reaching.any(axis=1), r.scores[rows, idx], above_top)
            return _between_scores(r.scores, np.where(r.n_neg > 0, chosen, np.nan))
    return _between_scores(r.scores, np.where(defined, r.scores[rows, idx], np.nan))


@dataclass(frozen=True)
class ThresholdSpec:
    """A threshold rule: ``method`` from :data:`THRESHOLD_METHODS` and its ``value`` (or None)."""

    method: str
    value: float | None = None

    def __str__(self) -> str:
        return self.method if self.value is None else f"{self.method}={self.value:g}"

    def select(self, y_true: object, y_score: object) -> np.ndarray:
        """:func:`select_thresholds` with this rule."""
        return select_thresholds(y_true, y_score, self.method, self.value)


def parse_threshold_spec(spec: str | ThresholdSpec) -> ThresholdSpec:
    """``"max_f1"``, ``"youden"``, ``"sensitivity=0.9"``, ``"specificity=0.95"`` or ``"fixed=0.5"``.

    Raises :class:`ConfigError` saying what a valid spec looks like. Targets are fractions, so
    ``sensitivity=90`` is refused rather than read as 90%.
    """
    if isinstance(spec, ThresholdSpec):
        return spec
    examples = "max_f1, youden, sensitivity=0.9, specificity=0.95 or fixed=0.5"
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"threshold spec must be a text such as {examples}; got {spec!r}")
    method, sep, raw = (part.strip() for part in spec.strip().partition("="))
    method = method.lower()
    if method not in THRESHOLD_METHODS:
        raise ConfigError(f"unknown threshold rule {method!r} in {spec!r}; use {examples}")
    needs_value = method in METHODS_NEEDING_VALUE
    if not needs_value:
        if sep:
            raise ConfigError(
                f"threshold rule {method!r} takes no value; write just {method!r} (got {spec!r})"
            )
        return ThresholdSpec(method)
    if not raw:
        raise ConfigError(
            f"threshold rule {method!r} needs a value, e.g. {method}=0.9 (got {spec!r})"
        )
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(
            f"the value of {spec!r} is not a number; write e.g. {method}=0.9"
        ) from None
    if not math.isfinite(value):
        raise ConfigError(f"the value of {spec!r} must be a finite number")
    if method != FIXED and not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"target {method} in {spec!r} must be a fraction between 0 and 1 (0.9 for 90%)"
        )
    return ThresholdSpec(method, value)
