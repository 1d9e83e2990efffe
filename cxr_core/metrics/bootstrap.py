"""Percentile bootstrap confidence intervals, resampling patients rather than images.

Images of one patient are not independent; resampling images would give intervals that are
too narrow. With ``groups`` (patient IDs) each resample draws patients with replacement and
takes all their images. A resample is represented by how many times each image was drawn (a
weight), so all resamples of a chunk are scored at once:

* threshold metrics are four matrix products (weights x called-positive indicators);
* the Brier score is a weighted mean: two matrix products (weights x squared errors, known);
* AUROC and AP sort each class's positives and negatives once and locate every positive among
  the negatives by binary search; a resample then only changes weights, so Mann-Whitney and the
  step-wise AP sum become cumulative sums of weights read at those fixed positions.

Results equal running the plain metric on each resampled data set. Resamples in which a class
has no positives/negatives (or whose statistic is otherwise undefined) are skipped for that
class, and the number used is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from cxr_core.metrics._inputs import MetricInputError, check_pair, class_thresholds
from cxr_core.metrics.confusion import METRIC_NAMES, check_decisions, threshold_metrics

AUROC = "auroc"
AVERAGE_PRECISION = "average_precision"
BRIER = "brier"
RANKING_STATISTICS: tuple[str, ...] = (AUROC, AVERAGE_PRECISION)
THRESHOLD_STATISTICS: tuple[str, ...] = METRIC_NAMES
STATISTICS: tuple[str, ...] = RANKING_STATISTICS + THRESHOLD_STATISTICS + (BRIER,)

# Weights of one chunk of resamples are (resamples x images) float64; this bounds it to ~32 MB.
_CHUNK_ELEMENTS = 4_000_000

Statistic = str | Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class BootstrapCI:
    """Interval per class; unpacks as ``low, high = bootstrap_ci(...)``.

    ``distribution`` is (n_boot, C) with NaN for resamples skipped for a class; ``n_used`` counts
    the resamples that entered each class's interval (low/high are NaN when it is 0).
    """

    low: np.ndarray
    high: np.ndarray
    n_used: np.ndarray
    distribution: np.ndarray
    alpha: float
    n_boot: int
    seed: int

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.low, self.high))


def group_index(groups: object, n_cases: int) -> tuple[np.ndarray, int]:
    """(N,) patient number 0..P-1 per case and P; a missing patient ID is refused, not guessed."""
    ids = np.asarray(groups, dtype=object).reshape(-1)
    if ids.shape[0] != n_cases:
        raise MetricInputError(
            f"got {ids.shape[0]} patient IDs for {n_cases} cases; give one patient ID per case (row)"
        )
    missing = np.array(
        [v is None or v == "" or (isinstance(v, float) and np.isnan(v)) for v in ids], dtype=bool
    )
    if missing.any():
        row = int(np.nonzero(missing)[0][0])
        raise MetricInputError(
            f"patient ID is missing for row {row} ({int(missing.sum())} rows in total); every case needs "
            "a patient ID for patient-level bootstrap, or pass groups=None to resample images"
        )
    _, inverse = np.unique(ids.astype(str), return_inverse=True)
    return inverse.reshape(-1), int(inverse.max()) + 1


def resample_weights(
    n_cases: int, groups: object = None, *, n_boot: int = 1000, seed: int = 0
) -> Iterator[np.ndarray]:
    """Chunks of (resamples x cases) draw counts; identical for identical arguments.

    Each resample draws as many units (patients if ``groups`` else images) as there are, with
    replacement; a case's weight is the number of times its unit was drawn.
    """
    if groups is None:
        inverse, n_units = None, n_cases
    else:
        inverse, n_units = group_index(groups, n_cases)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n_units, n_cases, 1)))
    for first in range(0, n_boot, chunk):
        size = min(chunk, n_boot - first)
        draws = rng.integers(0, n_units, size=(size, n_units))
        flat = (draws + (np.arange(size) * n_units)[:, None]).reshape(-1)
        counts = (
            np.bincount(flat, minlength=size * n_units).reshape(size, n_units).astype(np.float64)
        )
        yield counts if inverse is None else counts[:, inverse]


@dataclass(frozen=True)
class _ClassRanking:
    """One class's known positives and negatives, each in ascending score order.

    For the i-th positive, ``neg_below[i]``/``neg_upto[i]`` count negatives scored strictly
    below / at most its score and ``pos_below[i]`` positives strictly below it: positions in
    the cumulative weight arrays, fixed for every resample because only weights change.
    """

    positives: np.ndarray
    negatives: np.ndarray
    neg_below: np.ndarray
    neg_upto: np.ndarray
    pos_below: np.ndarray


def _class_rankings(labels: np.ndarray, scores: np.ndarray) -> list[_ClassRanking]:
    out = []
    for c in range(labels.shape[1]):
        positives = np.nonzero(labels[:, c] == 1)[0]
        negatives = np.nonzero(labels[:, c] == 0)[0]
        positives = positives[np.argsort(scores[positives, c], kind="stable")]
        negatives = negatives[np.argsort(scores[negatives, c], kind="stable")]
        pos_scores, neg_scores = scores[positives, c], scores[negatives, c]
        out.append(
            _ClassRanking(
                positives,
                negatives,
                np.searchsorted(neg_scores, pos_scores, side="left"),
                np.searchsorted(neg_scores, pos_scores, side="right"),
                np.searchsorted(pos_scores, pos_scores, side="left"),
            )
        )
    return out


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """(k + 1, resamples) running totals over rows, starting at 0.

    ``np.cumsum(axis=0)`` walks each resample's column with a large stride and is ~5x slower
    than adding whole rows (all resamples at once). Rows are summed in blocks of ~sqrt(k) so
    that long inputs need only ~2 sqrt(k) numpy calls; short ones add row by row.
    """
    n_rows, n_cols = weights.shape
    block = int(np.sqrt(n_rows)) if n_rows > 4096 else 1
    n_blocks = -(-n_rows // block)
    out = np.zeros((1 + n_blocks * block, n_cols))
    out[1 : n_rows + 1] = weights
    blocks = out[1:].reshape(n_blocks, block, n_cols)
    for j in range(1, block):
        blocks[:, j] += blocks[:, j - 1]
    for i in range(1, n_blocks):
        blocks[i] += blocks[i - 1, -1]
    return out[: n_rows + 1]


def _weighted_ranking(
    case_weights: np.ndarray, ranking: _ClassRanking, wanted: set[str]
) -> dict[str, np.ndarray]:
    """AUROC/AP of one class for each resample; ``case_weights`` is (cases, resamples)."""
    pos_w = case_weights[ranking.positives]
    neg_cum = _cumulative(case_weights[ranking.negatives])
    n_pos, n_neg = pos_w.sum(axis=0), neg_cum[-1]
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if AUROC in wanted:
            wins = (
                np.sum(pos_w * (neg_cum[ranking.neg_below] + neg_cum[ranking.neg_upto]), axis=0) / 2
            )
            out[AUROC] = np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)
        if AVERAGE_PRECISION in wanted:
            tp = n_pos - _cumulative(pos_w)[ranking.pos_below]
            called = tp + (n_neg - neg_cum[ranking.neg_below])
            precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
            out[AVERAGE_PRECISION] = np.where(
                n_pos > 0, np.sum(pos_w * precision, axis=0) / n_pos, np.nan
            )
    return out


def _percentile_interval(
    distribution: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_classes = distribution.shape[1]
    low, high = np.full(n_classes, np.nan), np.full(n_classes, np.nan)
    used = np.sum(~np.isnan(distribution), axis=0)
    for c in np.nonzero(used)[0]:
        column = distribution[~np.isnan(distribution[:, c]), c]
        low[c], high[c] = np.percentile(column, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return low, high, used


def _check_settings(n_boot: int, alpha: float) -> None:
    if int(n_boot) < 1:
        raise MetricInputError(f"n_boot must be at least 1 resample; got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(
            f"alpha must be between 0 and 1 (0.05 gives 95% intervals); got {alpha}"
        )


def bootstrap_cis(
    y_true: object,
    y_score: object,
    statistics: Sequence[str],
    *,
    thresholds: object = None,
    decisions: object = None,
    groups: object = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    progress: bool = False,
) -> dict[str, BootstrapCI]:
    """Intervals for several named statistics from the same resamples (one pass over them).

    Names are in :data:`STATISTICS`; threshold metrics (sensitivity, PPV, F1, ...) need
    ``thresholds`` (one for all classes or one per class) or ``decisions``, an (N, C) boolean
    array of positive calls (argmax of a multiclass model, out-of-fold calls). Each resample's
    counts are one matrix product of its weights with the call/label indicators, so all
    threshold metrics cost the same as one.
    """
    _check_settings(n_boot, alpha)
    unknown = [name for name in statistics if name not in STATISTICS]
    if unknown:
        raise MetricInputError(
            f"unknown bootstrap statistic(s) {unknown}; choose from {', '.join(STATISTICS)}"
        )
    labels, scores = check_pair(y_true, y_score)
    n_cases = labels.shape[0]
    wanted_ranking = {name for name in statistics if name in RANKING_STATISTICS}
    wanted_threshold = [name for name in statistics if name in THRESHOLD_STATISTICS]
    if wanted_threshold:
        indicators, undefined = _call_indicators(
            labels, scores, thresholds, decisions, wanted_threshold
        )
    if BRIER in statistics:
        known = ~np.isnan(labels)
        squared_error = np.where(known, (scores - np.nan_to_num(labels)) ** 2, 0.0)
        known = known.astype(np.float64)
    rankings = _class_rankings(labels, scores) if wanted_ranking else []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in statistics}

    bar = tqdm(total=int(n_boot), desc="bootstrap", unit="resample", disable=not progress)
    for weights in resample_weights(n_cases, groups, n_boot=int(n_boot), seed=seed):
        if wanted_threshold:
            tp, n_pos, fp, n_neg = np.split(weights @ indicators, 4, axis=1)
            derived = threshold_metrics({"tp": tp, "fp": fp, "tn": n_neg - fp, "fn": n_pos - tp})
            for name in wanted_threshold:
                parts[name].append(np.where(undefined, np.nan, derived[name]))
        if BRIER in statistics:
            total = weights @ known
            parts[BRIER].append(
                np.divide(
                    weights @ squared_error,
                    total,
                    out=np.full(total.shape, np.nan),
                    where=total > 0,
                )
            )
        if wanted_ranking:
            case_weights = np.ascontiguousarray(weights.T)
            per_class = [
                _weighted_ranking(case_weights, ranking, wanted_ranking) for ranking in rankings
            ]
            for name in wanted_ranking:
                parts[name].append(np.stack([values[name] for values in per_class], axis=1))
        bar.update(weights.shape[0])
    bar.close()

    out = {}
    for name in statistics:
        distribution = np.concatenate(parts[name], axis=0)
        low, high, used = _percentile_interval(distribution, alpha)
        out[name] = BootstrapCI(low, high, used, distribution, float(alpha), int(n_boot), int(seed))
    return out


def _call_indicators(
    labels: np.ndarray,
    scores: np.ndarray,
    thresholds: object,
    decisions: object,
    wanted: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """``[TP, P, FP, N]`` indicator columns per class (a resample's counts are its weights times
    these), and which classes have no threshold (their threshold metrics are undefined)."""
    n_cases, n_classes = labels.shape
    if (thresholds is None) == (decisions is None):
        raise MetricInputError(
            f"{', '.join(wanted)} need either thresholds or decisions (not both) to "
            "define a positive call"
        )
    if decisions is None:
        t = class_thresholds(thresholds, n_classes)
        called, undefined = scores >= t, np.isnan(t)
    else:
        undefined = np.zeros(n_classes, dtype=bool)
        called = check_decisions(decisions, n_cases, n_classes)
    pos, neg = (labels == 1).astype(np.float64), (labels == 0).astype(np.float64)
    return np.concatenate([pos * called, pos, neg * called, neg], axis=1), undefined


def bootstrap_ci(
    y_true: object,
    y_score: object,
    statistic: Statistic,
    *,
    thresholds: object = None,
    decisions: object = None,
    groups: object = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    progress: bool = False,
) -> BootstrapCI:
    """Percentile interval per class for one statistic; ``low, high = bootstrap_ci(...)``.

    ``statistic`` is a name from :data:`STATISTICS` (fast, vectorised over resamples) or any
    function ``f(y_true, y_score) -> (C,)`` called once per resample on the resampled rows
    (slower; NaN results are skipped like undefined resamples).
    """
    if isinstance(statistic, str):
        return bootstrap_cis(
            y_true,
            y_score,
            [statistic],
            thresholds=thresholds,
            decisions=decisions,
            groups=groups,
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
            progress=progress,
        )[statistic]
    if not callable(statistic):
        raise MetricInputError(
            f"statistic must be a name from {STATISTICS} or a function; got {statistic!r}"
        )
    _check_settings(n_boot, alpha)
    labels, scores = check_pair(y_true, y_score)
    rows = np.arange(labels.shape[0])
    values = []
    bar = tqdm(total=int(n_boot), desc="bootstrap", unit="resample", disable=not progress)
    for weights in resample_weights(labels.shape[0], groups, n_boot=int(n_boot), seed=seed):
        for w in weights.astype(np.int64):
            picked = np.repeat(rows, w)
            values.append(
                np.asarray(statistic(labels[picked], scores[picked]), dtype=np.float64).reshape(-1)
            )
        bar.update(weights.shape[0])
    bar.close()
    distribution = np.stack(values)
    low, high, used = _percentile_interval(distribution, alpha)
    return BootstrapCI(low, high, used, distribution, float(alpha), int(n_boot), int(seed))
