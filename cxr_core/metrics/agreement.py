"""Agreement between raters: Cohen's kappa for pairs, Fleiss' kappa for three or more, bootstrap intervals.

Ratings come as a long table, one row per (item, class, rater) with a categorical ``rating``
(e.g. ``present`` / ``absent`` / ``unsure``). Items are the unit of resampling: a bootstrap
draw takes items with replacement and recomputes the statistic, and the interval is the
percentile interval of the draws (draws where kappa is undefined are dropped).

Small samples: below :data:`MIN_FILMS` items rated by both raters (all, for Fleiss) the table
gives no kappa, no observed agreement and no interval (:data:`TOO_FEW`): over two or three films
kappa jumps between -1 and 1 with a single call, and a percentile bootstrap over a handful of
items draws from a few distinct resamples, so a number and an interval (say "0.000 (0.00 to
0.00)") would look precise and be meaningless. From :data:`MIN_FILMS` items on, kappa and the
observed agreement each come with a bootstrap interval. Kappa is also undefined when chance
agreement is 1 (:data:`NO_VARIATION`: every rating is one and the same category); the table's
``undefined`` column says which, so no caller has to guess why.

Cohen's point estimate is :func:`sklearn.metrics.cohen_kappa_score`; the bootstrap uses the
same formula on a confusion matrix (tested equal). Fleiss' kappa follows Fleiss (1971) and is
tested against ``statsmodels.stats.inter_rater.fleiss_kappa``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from cxr_core.errors import MetricInputError

RATING_COLUMNS = ("item", "class_name", "rater", "rating")
AGREEMENT_COLUMNS = (
    "class_name",
    "statistic",
    "rater_a",
    "rater_b",
    "n_items",
    "n_raters",
    "kappa",
    "ci_low",
    "ci_high",
    "observed_agreement",
    "agreement_ci_low",
    "agreement_ci_high",
    "undefined",
)
COHEN, FLEISS = "cohen", "fleiss"
TOO_FEW, NO_VARIATION = "too_few", "no_variation"
"""Why a kappa is undefined: fewer than :data:`MIN_FILMS` items rated by all its raters; every rating
the same category."""
MIN_FILMS = 10
"""Items (films) that all raters of a kappa must have rated before it, the observed agreement and
their intervals are reported: at 10, one film moves the observed agreement by 0.1 at most."""


def _undefined(kappa: float, n_items: int) -> str:
    """'' for a defined kappa, else :data:`TOO_FEW` or :data:`NO_VARIATION`."""
    if n_items < MIN_FILMS:
        return TOO_FEW
    return NO_VARIATION if np.isnan(kappa) else ""


def _summary(
    kappa: float, kappa_draws: list[float], agree: np.ndarray, n_items: int, rng
) -> dict[str, float | str]:
    """Kappa, observed agreement (share of items on which all raters agree) and their intervals,
    or NaN throughout with the reason when there are too few items."""
    why = _undefined(kappa, n_items)
    if why == TOO_FEW:
        return dict.fromkeys(_NUMBERS, float("nan")) | {"undefined": why}
    low, high = _percentiles(kappa_draws)
    draws = [agree[rng.integers(0, n_items, n_items)].mean() for _ in range(len(kappa_draws))]
    a_low, a_high = _percentiles(draws)
    return {
        "kappa": kappa,
        "ci_low": low,
        "ci_high": high,
        "observed_agreement": float(agree.mean()),
        "agreement_ci_low": a_low,
        "agreement_ci_high": a_high,
        "undefined": why,
    }


_NUMBERS = (
    "kappa",
    "ci_low",
    "ci_high",
    "observed_agreement",
    "agreement_ci_low",
    "agreement_ci_high",
)


def _codes(a: Sequence, b: Sequence) -> tuple[np.ndarray, np.ndarray, int]:
    categories = sorted(set(map(str, a)) | set(map(str, b)))
    index = {c: i for i, c in enumerate(categories)}
    return (
        np.array([index[str(x)] for x in a], dtype=int),
        np.array([index[str(x)] for x in b], dtype=int),
        len(categories),
    )


def _cohen_from_codes(x: np.ndarray, y: np.ndarray, k: int) -> float:
    n = len(x)
    if n < 2:
        return float("nan")
    matrix = np.bincount(x * k + y, minlength=k * k).reshape(k, k) / n
    observed = np.trace(matrix)
    expected = float(matrix.sum(axis=1) @ matrix.sum(axis=0))
    return (
        float("nan") if expected >= 1.0 - 1e-12 else float((observed - expected) / (1.0 - expected))
    )


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters over the same items (sklearn), NaN when undefined."""
    if len(a) != len(b):
        raise MetricInputError(
            f"two raters must rate the same items; got {len(a)} and {len(b)} ratings"
        )
    x, y, k = _codes(a, b)
    if len(x) < 2 or np.isnan(_cohen_from_codes(x, y, k)):
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(cohen_kappa_score(x, y, labels=list(range(k))))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa of an (items x categories) table of how many raters chose each category.

    Every item must have the same number of raters (at least two).
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise MetricInputError("Fleiss' kappa needs an (items x categories) table of counts")
    raters = table.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise MetricInputError(
            "Fleiss' kappa needs the same number (two or more) of raters for every item"
        )
    m, n_items = raters[0], table.shape[0]
    p_cat = table.sum(axis=0) / (n_items * m)
    p_item = ((table * table).sum(axis=1) - m) / (m * (m - 1))
    observed, expected = p_item.mean(), float((p_cat * p_cat).sum())
    return (
        float("nan") if expected >= 1.0 - 1e-12 else float((observed - expected) / (1.0 - expected))
    )


def fleiss_table(ratings: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Counts table of items rated by every rater present (wide: item x rater -> rating)."""
    wide = ratings.pivot(index="item", columns="rater", values="rating").dropna()
    categories = sorted(set(wide.to_numpy().ravel().astype(str)))
    counts = (
        np.stack([(wide.astype(str) == c).sum(axis=1).to_numpy() for c in categories], axis=1)
        if len(wide)
        else np.zeros((0, len(categories)))
    )
    return counts, categories


def _percentiles(draws: list[float]) -> tuple[float, float]:
    values = np.array([d for d in draws if not np.isnan(d)])
    if len(values) < 10:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _pair_row(
    class_name: str,
    a: str,
    b: str,
    x: pd.Series,
    y: pd.Series,
    n_boot: int,
    rng: np.random.Generator,
) -> dict:
    both = pd.concat([x.rename("a"), y.rename("b")], axis=1).dropna()
    cx, cy, k = _codes(both["a"].tolist(), both["b"].tolist())
    kappa = cohen_kappa(both["a"].tolist(), both["b"].tolist())
    draws = []
    if len(cx) >= MIN_FILMS and n_boot > 0:
        for _ in range(n_boot):
            pick = rng.integers(0, len(cx), len(cx))
            draws.append(_cohen_from_codes(cx[pick], cy[pick], k))
    return {
        "class_name": class_name,
        "statistic": COHEN,
        "rater_a": a,
        "rater_b": b,
        "n_items": int(len(cx)),
        "n_raters": 2,
        **_summary(kappa, draws, cx == cy, len(cx), rng),
    }


def _fleiss_row(
    class_name: str,
    part: pd.DataFrame,
    wide: pd.DataFrame,
    readers: list[str],
    n_boot: int,
    rng: np.random.Generator,
) -> dict:
    counts, _ = fleiss_table(part[part["rater"].isin(readers)])
    enough = len(counts) >= MIN_FILMS
    kappa = fleiss_kappa(counts) if enough else float("nan")
    draws = [
        fleiss_kappa(counts[rng.integers(0, len(counts), len(counts))])
        for _ in range(n_boot if enough else 0)
    ]
    unanimous = (wide[readers].dropna().astype(str).nunique(axis=1) == 1).to_numpy()
    return {
        "class_name": class_name,
        "statistic": FLEISS,
        "rater_a": "",
        "rater_b": "",
        "n_items": int(len(counts)),
        "n_raters": len(readers),
        **_summary(kappa, draws, unanimous, len(counts), rng),
    }


def agreement_table(
    ratings: pd.DataFrame, *, references: Sequence[str] = (), n_boot: int = 500, seed: int = 0
) -> pd.DataFrame:
    """Per class: Cohen's kappa for every pair of raters (readers with each other and with each reference),
    and Fleiss' kappa over the readers when there are three or more.

    ``ratings`` has :data:`RATING_COLUMNS`. Raters named in ``references`` (e.g. the dataset
    label, the model at its operating point) are compared with every reader but not with each
    other, and take no part in Fleiss' kappa. Columns of the result: :data:`AGREEMENT_COLUMNS`.
    """
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise MetricInputError(f"ratings lack column(s): {', '.join(missing)}")
    if ratings.duplicated(["item", "class_name", "rater"]).any():
        raise MetricInputError("a rater rated the same item and class more than once")
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for class_name in dict.fromkeys(ratings["class_name"]):
        part = ratings[ratings["class_name"] == class_name]
        wide = part.pivot(index="item", columns="rater", values="rating")
        readers = [r for r in sorted(wide.columns) if r not in references]
        refs = [r for r in references if r in wide.columns]
        pairs = list(combinations(readers, 2)) + [(r, ref) for r in readers for ref in refs]
        for a, b in pairs:
            rows.append(_pair_row(class_name, a, b, wide[a], wide[b], n_boot, rng))
        if len(readers) >= 3:
            rows.append(_fleiss_row(class_name, part, wide, readers, n_boot, rng))
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))
