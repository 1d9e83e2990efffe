"""Percentile bootstrap confidence intervals, resampling patients rather than images.

Images of one patient are not independent; resampling images would give intervals that are
too narrow. With ``groups`` (patient IDs) each resample draws patients with replacement and
takes all their images. A resample is represented by how many times each image was drawn (a
weight), so all resamples of a chunk are scored at once:

* threshold metrics are one matrix product (weights x called-positive indicators);
* the Brier score is a weighted mean: two matrix products (weights x squared errors, known);
* both only add cases up, so their indicators and errors are first summed per patient and the
  products run over patients (draw counts x per-patient sums), never over a (cases x classes)
  matrix: a million-image evaluation keeps them to a few hundred MB;
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

# Weights of one chunk of resamples are (resamples x images); this bounds them to 8M elements
# (32 MB in float32). At 1M images and 14 findings, 8 resamples a chunk hold the whole bootstrap
# at 460 MB (16: 633 MB) for 7% more time; AUROC/AP gather and add up rows of that matrix, whose
# cost per row is nearly fixed below ~16 resamples, so fewer would cost more time than memory.
_CHUNK_ELEMENTS = 8_000_000

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
    inverse, n_units = _units(groups, n_cases)
    for counts in _unit_draws(n_units, n_cases, n_boot, seed):
        yield counts if inverse is None else counts[:, inverse]


def _units(groups: object, n_cases: int) -> tuple[np.ndarray | None, int]:
    """Each case's resampling unit (None: every case its own) and the number of units."""
    return (None, n_cases) if groups is None else group_index(groups, n_cases)


def _unit_draws(n_units: int, n_cases: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of (resamples x units) float64 draw counts: the random part of every resample."""
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _CHUNK_ELEMENTS // max(n_units, n_cases, 1)))
    for first in range(0, n_boot, chunk):
        size = min(chunk, n_boot - first)
        draws = rng.integers(0, n_units, size=(size, n_units))
        flat = (draws + (np.arange(size) * n_units)[:, None]).reshape(-1)
        del draws
        yield np.bincount(flat, minlength=size * n_units).reshape(size, n_units).astype(np.float64)


def _unit_sums(
    columns: Iterator[np.ndarray], k: int, inverse: np.ndarray | None, n_units: int, dtype: type
) -> np.ndarray:
    """(units, k) sums of ``k`` per-case columns over each resampling unit's cases.

    Sums over a patient's images are all a resample needs of a statistic that adds cases up
    (confusion counts, squared errors): a resample's total is then the draw counts times
    these sums, a product over patients rather than over images, without any (cases x k)
    matrix in memory.
    """
    out = np.empty((n_units, k), dtype=dtype)
    for k, column in enumerate(columns):
        out[:, k] = (
            column if inverse is None else np.bincount(inverse, weights=column, minlength=n_units)
        )
    return out


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


def _cumulative(weights: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(k + 1, resamples) running totals over rows (``weights[rows]`` when given), starting at 0,
    in ``weights``' dtype.

    ``np.cumsum(axis=0)`` walks each resample's column with a large stride and is ~5x slower
    than adding whole rows (all resamples at once). Rows are summed in blocks of ~sqrt(k) so
    that long inputs need only ~2 sqrt(k) numpy calls; short ones add row by row. ``rows`` are
    gathered straight into the result, without a (k x resamples) copy first.
    """
    n_rows = weights.shape[0] if rows is None else len(rows)
    n_cols = weights.shape[1]
    block = int(np.sqrt(n_rows)) if n_rows > 4096 else 1
    n_blocks = -(-n_rows // block)
    out = np.zeros((1 + n_blocks * block, n_cols), dtype=weights.dtype)
    if rows is None:
        out[1 : n_rows + 1] = weights
    else:
        np.take(weights, rows, axis=0, out=out[1 : n_rows + 1], mode="clip")
    blocks = out[1:].reshape(n_blocks, block, n_cols)
    for j in range(1, block):
        blocks[:, j] += blocks[:, j - 1]
    for i in range(1, n_blocks):
        blocks[i] += blocks[i - 1, -1]
    return out[: n_rows + 1]


def _weighted_ranking(
    case_weights: np.ndarray, ranking: _ClassRanking, wanted: set[str]
) -> dict[str, np.ndarray]:
    """AUROC/AP of one class for each resample; ``case_weights`` is (cases, resamples).

    Running totals over the negatives stay in ``case_weights``' dtype (exact whole numbers, see
    :func:`_weight_dtype`); what is gathered at the positives is added and multiplied in float64.
    """
    pos_w = case_weights[ranking.positives].astype(np.float64)
    neg_cum = _cumulative(case_weights, ranking.negatives)
    n_pos, n_neg = pos_w.sum(axis=0), neg_cum[-1].astype(np.float64)
    neg_below = neg_cum[ranking.neg_below].astype(np.float64)
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if AUROC in wanted:
            wins = np.sum(pos_w * (neg_below + neg_cum[ranking.neg_upto]), axis=0) / 2
            out[AUROC] = np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)
        if AVERAGE_PRECISION in wanted:
            tp = n_pos - _cumulative(pos_w)[ranking.pos_below]
            called = tp + (n_neg - neg_below)
            precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
            out[AVERAGE_PRECISION] = np.where(
                n_pos > 0, np.sum(pos_w * precision, axis=0) / n_pos, np.nan
            )
    return out


def _weight_dtype(inverse: np.ndarray | None, n_units: int) -> type:
    """float32 when every running total of a resample's case weights is a whole number below
    2**24, so exact (half the memory of float64 at a million cases); float64 otherwise.

    A resample draws ``n_units`` units, each weighing at most its unit's number of cases.
    """
    largest_unit = 1 if inverse is None else int(np.bincount(inverse).max())
    return np.float32 if n_units * largest_unit < 2**24 else np.float64


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


def _confusion_columns(
    labels: np.ndarray,
    scores: np.ndarray,
    thresholds: object,
    decisions: object,
    wanted: Sequence[str],
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-case 0/1 columns [positive & called..., positive..., negative & called...,
    negative...] (one per class each) and which classes have no defined call."""
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
    pos, neg = labels == 1, labels == 0
    columns = (
        column
        for c_pos, c_neg in ((pos, called), (pos, None), (neg, called), (neg, None))
        for column in _masked(c_pos, c_neg)
    )
    return iter(columns), undefined


def _masked(values: np.ndarray, mask: np.ndarray | None) -> Iterator[np.ndarray]:
    """Each class's column of ``values`` (and ``mask``), one at a time."""
    for c in range(values.shape[1]):
        yield values[:, c] if mask is None else values[:, c] & mask[:, c]


def _ranking_values(
    weights: np.ndarray, inverse: np.ndarray | None, rankings: list, wanted: set[str], dtype: type
) -> dict[str, np.ndarray]:
    """(resamples, C) AUROC / AP of one chunk of resamples given as draw counts per unit."""
    by_unit = np.ascontiguousarray(weights.T, dtype=dtype)  # (units, resamples)
    case_weights = by_unit if inverse is None else by_unit[inverse]
    per_class = [_weighted_ranking(case_weights, ranking, wanted) for ranking in rankings]
    return {name: np.stack([values[name] for values in per_class], axis=1) for name in wanted}


def _brier_sums(
    labels: np.ndarray, scores: np.ndarray, inverse: np.ndarray | None, n_units: int
) -> tuple[np.ndarray, np.ndarray]:
    """(units, C) sums of squared errors and of known labels over each unit's cases."""
    n_classes = labels.shape[1]
    known = ~np.isnan(labels)
    squared = (
        np.where(known[:, c], (scores[:, c] - np.nan_to_num(labels[:, c])) ** 2, 0.0)
        for c in range(n_classes)
    )
    return (
        _unit_sums(squared, n_classes, inverse, n_units, np.float64),
        _unit_sums(iter(known.T), n_classes, inverse, n_units, np.float64),
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
    inverse, n_units = _units(groups, n_cases)
    if wanted_threshold:
        counts, undefined = _confusion_columns(
            labels, scores, thresholds, decisions, wanted_threshold
        )
        # 0/1 sums are whole numbers below 2**24, exact in float32 (half the memory of float64)
        indicators = _unit_sums(counts, 4 * labels.shape[1], inverse, n_units, np.float32)
    if BRIER in statistics:
        squared_error, known = _brier_sums(labels, scores, inverse, n_units)
    rankings = _class_rankings(labels, scores) if wanted_ranking else []
    weight_dtype = _weight_dtype(inverse, n_units)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in statistics}

    bar = tqdm(total=int(n_boot), desc="bootstrap", unit="resample", disable=not progress)
    for weights in _unit_draws(n_units, n_cases, int(n_boot), seed):
        if wanted_threshold:
            totals = (weights.astype(np.float32) @ indicators).astype(np.float64)
            tp, n_pos, fp, n_neg = np.split(totals, 4, axis=1)
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
            ranked = _ranking_values(weights, inverse, rankings, wanted_ranking, weight_dtype)
            for name, values in ranked.items():
                parts[name].append(values)
        bar.update(weights.shape[0])
    bar.close()

    out = {}
    for name in statistics:
        distribution = np.concatenate(parts[name], axis=0)
        low, high, used = _percentile_interval(distribution, alpha)
        out[name] = BootstrapCI(low, high, used, distribution, float(alpha), int(n_boot), int(seed))
    return out


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
