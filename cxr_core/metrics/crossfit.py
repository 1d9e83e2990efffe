"""Out-of-sample operating points by patient-level cross-fitting.

A max-F1 threshold chosen on the validation cases and then scored on the same cases reports
the best point of that sample's ROC curve, not what the threshold will do on the next
patients: sensitivity, PPV and F1 come out optimistic, most for small classes. Cross-fitting
keeps every number out of sample while still using all validation cases:

1. the cases are dealt into ``n_folds`` folds by patient (all images of a patient in one fold;
   scikit-learn's ``StratifiedGroupKFold``, stratified by each patient's rarest positive class
   so that rare findings reach every fold);
2. for each fold, thresholds are fitted on the other folds and applied to it;
3. metrics are computed on these out-of-fold decisions.

The thresholds to deploy (store in the card) are fitted once more on all cases; the
out-of-fold metrics estimate how that procedure performs on unseen patients. A class whose
threshold is undefined in some fold's training part (no known positives there) leaves that
fold's cases undecided; they are left out of that class's metrics and counted.

With ``n_boot`` the out-of-fold metrics get patient-level bootstrap intervals. They resample
the cases with their out-of-fold calls fixed, so they cover case sampling, not the variation
of refitting the thresholds (which cross-fitting already spreads over the folds).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from cxr_core.metrics._inputs import MetricInputError, check_pair
from cxr_core.metrics.bootstrap import BootstrapCI, bootstrap_cis, group_index
from cxr_core.metrics.confusion import METRIC_NAMES, decision_counts, threshold_metrics
from cxr_core.metrics.thresholds import ThresholdSpec, parse_threshold_spec


def _strata(labels: np.ndarray, patient: np.ndarray, n_patients: int) -> np.ndarray:
    """Per case: its patient's rarest positive class (by patient count), or -1 with none."""
    positive = np.zeros((n_patients, labels.shape[1]), dtype=bool)
    np.logical_or.at(positive, patient, labels == 1)
    freq = positive.sum(axis=0).astype(np.float64)
    keyed = np.where(positive, freq[None, :], np.inf)
    rarest = np.where(positive.any(axis=1), keyed.argmin(axis=1), -1)
    return rarest[patient]


def patient_folds(y_true: object, groups: object, *, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """(N,) fold index 0..n_folds-1 per case; every patient's cases share one fold.

    Seeded and stratified (see the module docstring). ``y_true`` is (N, C) with NaN unknown.
    """
    labels = np.asarray(y_true, dtype=np.float64)
    labels = labels[:, None] if labels.ndim == 1 else labels
    n_folds = int(n_folds)
    if n_folds < 2:
        raise MetricInputError(f"cross-fitting needs at least 2 folds; got n_folds={n_folds}")
    patient, n_patients = group_index(groups, labels.shape[0])
    if n_patients < n_folds:
        raise MetricInputError(
            f"{n_patients} patient(s) cannot fill {n_folds} patient-level folds; use fewer folds or more cases"
        )
    strata = _strata(labels, patient, n_patients)
    _, counts = np.unique(strata, return_counts=True)
    if np.all(counts < n_folds):
        # Every stratum is rarer than the folds (tiny data): stratifying is impossible, so the
        # patients are dealt into folds without it (still seeded, still patient-level).
        order = np.random.default_rng(seed).permutation(n_patients)
        return (np.argsort(order)[patient] % n_folds).astype(np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds = np.empty(labels.shape[0], dtype=np.int64)
    with warnings.catch_warnings():
        # Strata rarer than n_folds are expected for rare findings; they are dealt as well as possible.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(strata)), strata, patient)):
            folds[held_out] = k
    return folds


@dataclass(frozen=True)
class CrossFitThresholds:
    """Out-of-fold operating points; see :func:`crossfit_thresholds`.

    ``case_thresholds`` (N, C) is the threshold each case was judged by (fitted on the folds
    it is not in), ``decisions`` the resulting calls (False where undecided), ``metrics`` the
    per-class sensitivity/specificity/PPV/NPV/F1/accuracy and counts (each (C,)) over the
    decided cases, ``n_undecided`` (C,) the known-label cases left out. ``final_thresholds``
    (C,) are fitted on all cases: the ones to store. ``cis`` maps each metric to its
    patient-level interval (empty without ``n_boot``).
    """

    spec: ThresholdSpec
    folds: np.ndarray
    fold_thresholds: np.ndarray
    case_thresholds: np.ndarray
    decisions: np.ndarray
    metrics: dict[str, np.ndarray]
    n_undecided: np.ndarray
    final_thresholds: np.ndarray
    source: str
    cis: dict[str, BootstrapCI]

    def to_dict(self, class_names: list[str]) -> dict:
        """Per class: final threshold, out-of-fold metrics and counts, fold thresholds; plus the source."""
        per_class = {}
        for c, name in enumerate(class_names):
            entry = {
                "threshold": self.final_thresholds[c],
                "fold_thresholds": self.fold_thresholds[:, c].tolist(),
            }
            entry.update({key: values[c] for key, values in self.metrics.items()})
            entry.update({f"{key}_ci": [ci.low[c], ci.high[c]] for key, ci in self.cis.items()})
            entry["n_undecided"] = int(self.n_undecided[c])
            per_class[name] = entry
        return {
            "rule": str(self.spec),
            "source": self.source,
            "n_folds": int(self.fold_thresholds.shape[0]),
            "per_class": per_class,
        }


def crossfit_thresholds(
    y_true: object,
    y_score: object,
    groups: object,
    spec: str | ThresholdSpec,
    *,
    n_folds: int = 5,
    seed: int = 0,
    split: str = "val",
    n_boot: int = 0,
    alpha: float = 0.05,
) -> CrossFitThresholds:
    """Thresholds by ``spec`` (e.g. ``"max_f1"``) fitted on other patients' folds, scored out of fold.

    ``y_true``/``y_score`` are (N, C) (NaN = unknown label), ``groups`` the patient ID per case.
    ``source`` reads like ``"val:crossfit-5"`` for the card's threshold set. ``n_boot`` > 0
    adds patient-level intervals of the out-of-fold metrics (``seed`` also seeds them).
    """
    rule = parse_threshold_spec(spec)
    labels, scores = check_pair(y_true, y_score)
    folds = patient_folds(labels, groups, n_folds=n_folds, seed=seed)
    n_folds = int(folds.max()) + 1
    fold_thresholds = np.full((n_folds, labels.shape[1]), np.nan)
    case_thresholds = np.full(labels.shape, np.nan)
    for k in range(n_folds):
        held_out = folds == k
        fold_thresholds[k] = rule.select(labels[~held_out], scores[~held_out])
        case_thresholds[held_out] = fold_thresholds[k]
    decided = ~np.isnan(case_thresholds)
    decisions = decided & (scores >= np.where(decided, case_thresholds, np.inf))
    scored_labels = np.where(decided, labels, np.nan)
    metrics = threshold_metrics(decision_counts(scored_labels, decisions))
    n_undecided = np.sum(~np.isnan(labels) & ~decided, axis=0)
    cis = (
        bootstrap_cis(
            scored_labels,
            scores,
            METRIC_NAMES,
            decisions=decisions,
            groups=groups,
            n_boot=n_boot,
            seed=seed,
            alpha=alpha,
        )
        if n_boot > 0
        else {}
    )
    return CrossFitThresholds(
        spec=rule,
        folds=folds,
        fold_thresholds=fold_thresholds,
        case_thresholds=case_thresholds,
        decisions=decisions,
        metrics=metrics,
        n_undecided=n_undecided,
        final_thresholds=rule.select(labels, scores),
        source=f"{split}:crossfit-{n_folds}",
        cis=cis,
    )
