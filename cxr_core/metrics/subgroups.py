"""Does the model work as well for every group of patients? Per-subgroup metrics and gaps.

For each value of a subgroup key (view position, sex, age band, site, ...) the report gives
the number of images and patients, and per class the AUROC and the sensitivity/specificity at
the given thresholds, each with a patient-level bootstrap interval, and the gap to the
overall figure (subgroup minus overall) with an interval of the gap.

The gap interval is paired: one set of patient-level resamples of all cases is drawn, and in
each resample the overall statistic and the subgroup's statistic (on the subgroup's rows of
that same resample, i.e. its resampled patients) are computed and subtracted. The subgroup is
part of the whole, so the two are correlated; resampling them independently would give gap
intervals that are too wide. Technically the subgroup statistic is the bootstrap of the whole
data with the labels outside the subgroup treated as unknown: same cases, same seed, hence
the same resample weights. A patient with images in several subgroups (an AP and a PA film)
enters each with the images it has there. A gap is flagged when its interval excludes zero;
with many subgroups and classes some flags are expected by chance (no multiplicity
correction), so a flag is a prompt to look, not a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxr_core.metrics._inputs import MetricInputError, check_pair, class_thresholds
from cxr_core.metrics.bootstrap import AUROC, bootstrap_cis, group_index
from cxr_core.metrics.confusion import confusion_counts, threshold_metrics
from cxr_core.metrics.ranking import roc_auc
from cxr_core.metrics.report import to_jsonable

SUBGROUP_STATISTICS: tuple[str, ...] = (AUROC, "sensitivity", "specificity")
UNKNOWN = "unknown"
AGE_BANDS: tuple[str, ...] = ("<18", "18-39", "40-59", "60-79", ">=80")
_AGE_EDGES = np.array([18.0, 40.0, 60.0, 80.0])


def age_band(age: object) -> np.ndarray:
    """Age in years -> band: ``<18``, ``18-39``, ``40-59``, ``60-79``, ``>=80``; missing or
    negative -> ``unknown``.

    Bands are 20 years wide through adult life (paediatric films differ enough to be their own
    band; the oldest band is open because there are few patients past 100).
    """
    values = np.asarray(age, dtype=object).reshape(-1)
    numbers = np.array([_as_number(v) for v in values], dtype=np.float64)
    valid = np.isfinite(numbers) & (numbers >= 0)
    bands = np.asarray(AGE_BANDS, dtype=object)[
        np.searchsorted(_AGE_EDGES, np.where(valid, numbers, 0), side="right")
    ]
    return np.where(valid, bands, UNKNOWN).astype(object)


def _as_number(value: object) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _subgroup_labels(subgroups: object, n_cases: int) -> np.ndarray:
    keys = np.asarray(subgroups, dtype=object).reshape(-1)
    if keys.shape[0] != n_cases:
        raise MetricInputError(
            f"got {keys.shape[0]} subgroup values for {n_cases} cases; give one per case (row)"
        )
    missing = np.array(
        [v is None or v == "" or (isinstance(v, float) and np.isnan(v)) for v in keys], dtype=bool
    )
    return np.where(missing, UNKNOWN, keys.astype(str)).astype(object)


def _point(labels: np.ndarray, scores: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    derived = threshold_metrics(confusion_counts(labels, scores, t))
    return {
        AUROC: roc_auc(labels, scores),
        "sensitivity": derived["sensitivity"],
        "specificity": derived["specificity"],
    }


def _interval(values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column over the finite values (NaN when there are none)."""
    low, high = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    for c in range(values.shape[1]):
        column = values[np.isfinite(values[:, c]), c]
        if column.size:
            low[c], high[c] = np.percentile(column, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return low, high


def subgroup_report(
    y_true: object,
    y_score: object,
    subgroups: object,
    groups: object,
    thresholds: object,
    class_names: Sequence[str],
    *,
    key: str = "subgroup",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    min_positives: int = 10,
) -> dict:
    """Per subgroup: n, patients, per-class AUROC/sensitivity/specificity with CIs and paired gaps.

    ``y_true``/``y_score`` are (N, C) (NaN = unknown label), ``subgroups`` one value per case
    (missing -> ``unknown``; use :func:`age_band` for ages), ``groups`` the patient IDs,
    ``thresholds`` one per class (or one for all). JSON-ready (NaN -> None). A class with
    fewer than ``min_positives`` known positives or negatives in a subgroup is marked
    ``low_count``: its numbers are shown but are too noisy to read much into.
    """
    labels, scores = check_pair(y_true, y_score)
    names = [str(n) for n in class_names]
    if len(names) != labels.shape[1]:
        raise MetricInputError(
            f"{len(names)} class names for {labels.shape[1]} label/score columns"
        )
    if int(n_boot) < 1:
        raise MetricInputError(f"subgroup gaps need bootstrap resamples; got n_boot={n_boot}")
    t = class_thresholds(thresholds, labels.shape[1])
    keys = _subgroup_labels(subgroups, labels.shape[0])
    patient, _ = group_index(groups, labels.shape[0])
    settings = {"groups": groups, "n_boot": int(n_boot), "seed": int(seed), "alpha": alpha}

    overall_point = _point(labels, scores, t)
    overall = bootstrap_cis(labels, scores, SUBGROUP_STATISTICS, thresholds=t, **settings)

    out_groups = {}
    for value in sorted(set(keys.tolist()), key=lambda v: (v == UNKNOWN, v)):
        inside = keys == value
        out_groups[value] = _subgroup_entry(
            labels,
            scores,
            inside,
            patient,
            t,
            names,
            overall,
            overall_point,
            settings=settings,
            min_positives=min_positives,
        )
    return to_jsonable(
        {
            "key": key,
            "settings": {
                "n_boot": int(n_boot),
                "seed": int(seed),
                "alpha": float(alpha),
                "bootstrap_unit": "patient",
                "gap": "subgroup minus overall; paired percentile bootstrap over patients",
                "min_positives": int(min_positives),
            },
            "overall": {
                "n": int(labels.shape[0]),
                "n_patients": int(np.unique(patient).size),
                "per_class": _overall_classes(t, names, overall, overall_point),
            },
            "subgroups": out_groups,
        }
    )


def _overall_classes(t: np.ndarray, names: list[str], overall: dict, overall_point: dict) -> dict:
    """Per class over all cases: the threshold, each statistic and its CI."""
    return {
        name: {
            "threshold": t[c],
            **{stat: overall_point[stat][c] for stat in SUBGROUP_STATISTICS},
            **{
                f"{stat}_ci": [overall[stat].low[c], overall[stat].high[c]]
                for stat in SUBGROUP_STATISTICS
            },
        }
        for c, name in enumerate(names)
    }


def _subgroup_entry(
    labels: np.ndarray,
    scores: np.ndarray,
    inside: np.ndarray,
    patient: np.ndarray,
    t: np.ndarray,
    names: list[str],
    overall: dict,
    overall_point: dict,
    *,
    settings: dict,
    min_positives: int,
) -> dict:
    """One subgroup's n, patients and per-class values, CIs and paired gaps to ``overall``
    (the same resamples: a case outside the subgroup counts as an unknown label)."""
    alpha = settings["alpha"]
    masked = np.where(inside[:, None], labels, np.nan)  # outside the subgroup = unknown
    point = _point(labels[inside], scores[inside], t)
    boot = bootstrap_cis(masked, scores, SUBGROUP_STATISTICS, thresholds=t, **settings)
    n_pos = np.sum(labels[inside] == 1, axis=0)
    n_neg = np.sum(labels[inside] == 0, axis=0)
    per_class = {
        name: {
            "n_pos": int(n_pos[c]),
            "n_neg": int(n_neg[c]),
            "low_count": bool(min(n_pos[c], n_neg[c]) < min_positives),
        }
        for c, name in enumerate(names)
    }
    for stat in SUBGROUP_STATISTICS:
        gap_low, gap_high = _interval(boot[stat].distribution - overall[stat].distribution, alpha)
        gap = point[stat] - overall_point[stat]
        for c, name in enumerate(names):
            per_class[name].update(
                {
                    stat: point[stat][c],
                    f"{stat}_ci": [boot[stat].low[c], boot[stat].high[c]],
                    f"{stat}_gap": gap[c],
                    f"{stat}_gap_ci": [gap_low[c], gap_high[c]],
                    f"{stat}_gap_flag": bool(gap_low[c] > 0 or gap_high[c] < 0),
                }
            )
    return {
        "n": int(inside.sum()),
        "n_patients": int(np.unique(patient[inside]).size),
        "per_class": per_class,
    }


def subgroup_report_from_predictions(
    predictions: pd.DataFrame,
    subgroups: str | Sequence[object],
    thresholds: object,
    **options: object,
) -> dict:
    """:func:`subgroup_report` of a predictions frame (``label:<class>``, ``prob:<class>``,
    ``patient_id`` columns, as ``predictions.csv``); ``subgroups`` is one of its columns (e.g.
    merged in from the manifest) or one value per row. ``options`` go to :func:`subgroup_report`.
    """
    classes = [c[len("prob:") :] for c in predictions.columns if str(c).startswith("prob:")]
    missing = [f"label:{c}" for c in classes if f"label:{c}" not in predictions] + (
        [] if "patient_id" in predictions else ["patient_id"]
    )
    if not classes or missing:
        raise MetricInputError(
            "a predictions frame needs prob:<class>, label:<class> and patient_id columns"
            + (f"; missing {missing}" if missing else "")
        )
    if isinstance(subgroups, str):
        if subgroups not in predictions:
            raise MetricInputError(
                f"the predictions have no column {subgroups!r} to form subgroups from"
            )
        options.setdefault("key", subgroups)
        subgroups = predictions[subgroups].to_numpy(dtype=object)
    return subgroup_report(
        predictions[[f"label:{c}" for c in classes]].to_numpy(np.float64),
        predictions[[f"prob:{c}" for c in classes]].to_numpy(np.float64),
        subgroups,
        predictions["patient_id"].astype(str).to_numpy(),
        thresholds,
        classes,
        **options,
    )
