"""Speed of the metrics package on an NIH-sized validation set, against scikit-learn.

14 classes x 25,596 cases of synthetic but realistic predictions (NIH-like prevalences from
0.2% to 18%, float32 model outputs, so ties occur). Measured in one run:

1. threshold move: all per-class counts -> sensitivity/specificity/PPV/NPV/F1 for a new threshold
   vector, with the prebuilt ``SortedScores``, versus a per-class scikit-learn loop
   (confusion_matrix + precision_recall_fscore_support) - the path a dashboard slider takes;
2. AUROC + AP for all classes versus per-class roc_auc_score + average_precision_score;
3. the full slider-free baseline the brief names: per class roc_auc_score + confusion_matrix +
   precision_recall_fscore_support at the threshold;
4. 1000-resample bootstrap AUROC CIs, 14 classes x 2,000 cases (budget 1-3 s);
5. the Performance page's recompute after a threshold change: the evaluation report with 200
   patient-level resamples and intervals for AUROC, AP, sensitivity, specificity, PPV, NPV,
   F1 and Brier, on the bundled nih14 validation predictions stacked to NIH size (~600 cases
   x 14 classes). Old = re-scoring every resampled data set (the per-resample loop),
   new = one matrix product of resample weights with call/label indicators per chunk; both
   median of repeats in this run, with their intervals checked to be equal.

Goals: threshold move <= 10 ms and >= 20x faster than the scikit-learn loop; CI recompute <= 1 s.
Run: ``python benchmarks/bench_metrics.py`` (``--ci-only`` for part 5 alone).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from cxr_core.metrics import (
    SortedScores,
    bootstrap_ci,
    bootstrap_cis,
    brier_score,
    confusion_counts,
    evaluation_report,
    ranking_metrics,
    select_thresholds,
    threshold_metrics,
)
from cxr_core.metrics.report import CI_STATISTICS

N_CASES = 25_596
NIH_VAL_PREDICTIONS = (
    Path(__file__).resolve().parents[1]
    / "checkpoints"
    / "nih14"
    / "eval"
    / "val"
    / "predictions.csv"
)
CI_GOAL_S = 1.0
CI_RESAMPLES = 200
PREVALENCE = np.array(
    [0.10, 0.025, 0.12, 0.18, 0.05, 0.055, 0.012, 0.047, 0.04, 0.02, 0.022, 0.015, 0.03, 0.002]
)


def synthetic(n_cases: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_cases, PREVALENCE.size)) < PREVALENCE).astype(np.float64)
    logits = rng.normal(-2.0, 1.0, labels.shape) + 1.6 * labels
    scores = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32).astype(np.float64)
    return labels, scores


def best_ms(fn: Callable[[], object], repeats: int, number: int = 1) -> float:
    """Best-of-``repeats`` mean time per call in milliseconds (least disturbed by other load)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return 1000 * min(times)


def sklearn_threshold_metrics(
    labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray
) -> list[dict]:
    out = []
    for c in range(labels.shape[1]):
        called = scores[:, c] >= thresholds[c]
        tn, fp, fn, tp = confusion_matrix(labels[:, c], called, labels=[0, 1]).ravel()
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels[:, c], called, average="binary", zero_division=np.nan
        )
        out.append(
            {
                "sensitivity": recall,
                "specificity": tn / (tn + fp),
                "ppv": precision,
                "npv": tn / (tn + fn) if tn + fn else np.nan,
                "f1": f1,
            }
        )
    return out


def median_s(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time per call in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def nih_sized_predictions(
    min_cases: int = 600,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The bundled nih14 validation predictions, stacked (new patient IDs per copy) to >= ``min_cases``."""
    frame = pd.read_csv(NIH_VAL_PREDICTIONS)
    classes = [c[len("prob:") :] for c in frame.columns if c.startswith("prob:")]
    labels = frame[[f"label:{c}" for c in classes]].to_numpy(np.float64)
    probs = frame[[f"prob:{c}" for c in classes]].to_numpy(np.float64)
    patients = frame["patient_id"].astype(str).to_numpy()
    copies = -(-min_cases // len(frame))
    ids = np.concatenate([np.char.add(f"copy{k}-", patients.astype(str)) for k in range(copies)])
    return np.tile(labels, (copies, 1)), np.tile(probs, (copies, 1)), ids, classes


def per_resample_cis(
    labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, groups: np.ndarray
) -> dict:
    """The old way: every statistic recomputed on each resampled data set."""
    names = list(CI_STATISTICS)

    def statistic(y: np.ndarray, p: np.ndarray) -> np.ndarray:
        auroc, ap = ranking_metrics(y, p)
        derived = threshold_metrics(confusion_counts(y, p, thresholds))
        values = {"auroc": auroc, "average_precision": ap, "brier": brier_score(y, p), **derived}
        return np.concatenate([values[name] for name in names])

    result = bootstrap_ci(labels, probs, statistic, groups=groups, n_boot=CI_RESAMPLES, seed=0)
    k = labels.shape[1]
    return {
        name: (result.low[i * k : (i + 1) * k], result.high[i * k : (i + 1) * k])
        for i, name in enumerate(names)
    }


def ci_recompute() -> bool:
    """Part 5; returns whether the <= 1 s goal is met."""
    labels, probs, groups, classes = nih_sized_predictions()
    thresholds = select_thresholds(labels, probs, "max_f1")
    print(
        f"CI recompute input: bundled nih14 val predictions stacked to {labels.shape[0]} cases x "
        f"{labels.shape[1]} classes, {len(set(groups))} patients, {CI_RESAMPLES} patient-level resamples"
    )
    old = per_resample_cis(labels, probs, thresholds, groups)
    new = bootstrap_cis(
        labels,
        probs,
        CI_STATISTICS,
        thresholds=thresholds,
        groups=groups,
        n_boot=CI_RESAMPLES,
        seed=0,
    )
    for name in CI_STATISTICS:
        np.testing.assert_allclose(new[name].low, old[name][0], atol=1e-10, equal_nan=True)
        np.testing.assert_allclose(new[name].high, old[name][1], atol=1e-10, equal_nan=True)
    old_s = median_s(lambda: per_resample_cis(labels, probs, thresholds, groups), repeats=3)
    new_s = median_s(
        lambda: bootstrap_cis(
            labels,
            probs,
            CI_STATISTICS,
            thresholds=thresholds,
            groups=groups,
            n_boot=CI_RESAMPLES,
            seed=0,
        ),
        repeats=7,
    )
    report_s = median_s(
        lambda: evaluation_report(
            labels,
            probs,
            classes,
            "multilabel",
            thresholds=thresholds,
            groups=groups,
            n_boot=CI_RESAMPLES,
        ),
        repeats=5,
    )
    print(
        f"CIs of {len(CI_STATISTICS)} statistics, old per-resample loop:   {old_s:8.3f} s (median)"
    )
    print(
        f"CIs of {len(CI_STATISTICS)} statistics, new vectorised:          {new_s:8.3f} s (median) "
        f"-> {old_s / new_s:,.0f}x faster, same intervals"
    )
    print(f"whole evaluation report at new thresholds (page recompute): {report_s:8.3f} s (median)")
    met = report_s <= CI_GOAL_S
    print(f"goal (CI recompute <= {CI_GOAL_S:g} s): {'met' if met else 'NOT met'}")
    return met


def main() -> None:
    warnings.simplefilter("ignore")
    labels, scores = synthetic(N_CASES)
    rng = np.random.default_rng(1)
    threshold_vectors = rng.uniform(0.05, 0.6, size=(64, PREVALENCE.size))
    print(f"{PREVALENCE.size} classes x {N_CASES} cases")

    build_ms = best_ms(lambda: SortedScores(labels, scores), repeats=3)
    sorted_scores = SortedScores(labels, scores)
    state = {"i": 0}

    def move() -> None:
        state["i"] = (state["i"] + 1) % len(threshold_vectors)
        sorted_scores.metrics_at(threshold_vectors[state["i"]])

    ours_move = best_ms(move, repeats=5, number=200)
    sk_move = best_ms(
        lambda: sklearn_threshold_metrics(labels, scores, threshold_vectors[0]), repeats=3
    )
    check_ours = sorted_scores.metrics_at(threshold_vectors[0])
    check_sk = sklearn_threshold_metrics(labels, scores, threshold_vectors[0])
    assert np.allclose(check_ours["f1"], [d["f1"] for d in check_sk], equal_nan=True)
    print(f"SortedScores build (once per prediction set): {build_ms:8.2f} ms")
    print(f"threshold move, SortedScores.metrics_at:        {ours_move:8.3f} ms")
    print(
        f"threshold move, sklearn per-class loop:         {sk_move:8.2f} ms   -> {sk_move / ours_move:,.0f}x faster"
    )

    ours_rank = best_ms(lambda: ranking_metrics(labels, scores), repeats=3)

    def sklearn_rank() -> None:
        for c in range(labels.shape[1]):
            roc_auc_score(labels[:, c], scores[:, c])
            average_precision_score(labels[:, c], scores[:, c])

    sk_rank = best_ms(sklearn_rank, repeats=3)
    print(f"AUROC+AP all classes, ranking_metrics:          {ours_rank:8.2f} ms")
    print(
        f"AUROC+AP all classes, sklearn per-class loop:   {sk_rank:8.2f} ms   -> {sk_rank / ours_rank:.1f}x faster"
    )

    def sklearn_full() -> None:
        for c in range(labels.shape[1]):
            roc_auc_score(labels[:, c], scores[:, c])
        sklearn_threshold_metrics(labels, scores, threshold_vectors[0])

    sk_full = best_ms(sklearn_full, repeats=3)
    print(
        f"AUROC + threshold metrics, sklearn loop:        {sk_full:8.2f} ms   "
        f"(threshold move alone is {sk_full / ours_move:,.0f}x faster)"
    )

    small_labels, small_scores = synthetic(2_000, seed=2)
    boot_s = (
        best_ms(lambda: bootstrap_ci(small_labels, small_scores, "auroc", n_boot=1000), repeats=2)
        / 1000
    )
    print(
        f"bootstrap AUROC CI, 1000 resamples x 14 classes x 2,000 cases: {boot_s:.2f} s (budget 1-3 s)"
    )

    goal = ours_move <= 10 and sk_move / ours_move >= 20
    print(f"goal (threshold move <= 10 ms and >= 20x): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    if "--ci-only" in sys.argv[1:]:
        ci_recompute()
    else:
        main()
        ci_recompute()
