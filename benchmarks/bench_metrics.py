"""Speed of the metrics package on an NIH-sized validation set, against scikit-learn.

14 classes x 25,596 cases of synthetic but realistic predictions (NIH-like prevalences from
0.2% to 18%, float32 model outputs, so ties occur). Measured in one run:

1. threshold move: all per-class counts -> sensitivity/specificity/PPV/NPV/F1 for a new threshold
   vector, with the prebuilt ``SortedScores``, versus a per-class scikit-learn loop
   (confusion_matrix + precision_recall_fscore_support) - the path a dashboard slider takes;
2. AUROC + AP for all classes versus per-class roc_auc_score + average_precision_score;
3. the full slider-free baseline the brief names: per class roc_auc_score + confusion_matrix +
   precision_recall_fscore_support at the threshold;
4. 1000-resample bootstrap AUROC CIs, 14 classes x 2,000 cases (budget 1-3 s).

Goals: threshold move <= 10 ms and >= 20x faster than the scikit-learn loop.
Run: ``python benchmarks/bench_metrics.py``
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from cxr_core.metrics import SortedScores, bootstrap_ci, ranking_metrics

N_CASES = 25_596
PREVALENCE = np.array([0.10, 0.025, 0.12, 0.18, 0.05, 0.055, 0.012, 0.047, 0.04, 0.02, 0.022, 0.015, 0.03, 0.002])


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


def sklearn_threshold_metrics(labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> list[dict]:
    out = []
    for c in range(labels.shape[1]):
        called = scores[:, c] >= thresholds[c]
        tn, fp, fn, tp = confusion_matrix(labels[:, c], called, labels=[0, 1]).ravel()
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels[:, c], called, average="binary", zero_division=np.nan
        )
        out.append({"sensitivity": recall, "specificity": tn / (tn + fp), "ppv": precision,
                    "npv": tn / (tn + fn) if tn + fn else np.nan, "f1": f1})
    return out


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
    sk_move = best_ms(lambda: sklearn_threshold_metrics(labels, scores, threshold_vectors[0]), repeats=3)
    check_ours = sorted_scores.metrics_at(threshold_vectors[0])
    check_sk = sklearn_threshold_metrics(labels, scores, threshold_vectors[0])
    assert np.allclose(check_ours["f1"], [d["f1"] for d in check_sk], equal_nan=True)
    print(f"SortedScores build (once per prediction set): {build_ms:8.2f} ms")
    print(f"threshold move, SortedScores.metrics_at:        {ours_move:8.3f} ms")
    print(f"threshold move, sklearn per-class loop:         {sk_move:8.2f} ms   -> {sk_move / ours_move:,.0f}x faster")

    ours_rank = best_ms(lambda: ranking_metrics(labels, scores), repeats=3)

    def sklearn_rank() -> None:
        for c in range(labels.shape[1]):
            roc_auc_score(labels[:, c], scores[:, c])
            average_precision_score(labels[:, c], scores[:, c])

    sk_rank = best_ms(sklearn_rank, repeats=3)
    print(f"AUROC+AP all classes, ranking_metrics:          {ours_rank:8.2f} ms")
    print(f"AUROC+AP all classes, sklearn per-class loop:   {sk_rank:8.2f} ms   -> {sk_rank / ours_rank:.1f}x faster")

    def sklearn_full() -> None:
        for c in range(labels.shape[1]):
            roc_auc_score(labels[:, c], scores[:, c])
        sklearn_threshold_metrics(labels, scores, threshold_vectors[0])

    sk_full = best_ms(sklearn_full, repeats=3)
    print(f"AUROC + threshold metrics, sklearn loop:        {sk_full:8.2f} ms   "
          f"(threshold move alone is {sk_full / ours_move:,.0f}x faster)")

    small_labels, small_scores = synthetic(2_000, seed=2)
    boot_s = best_ms(lambda: bootstrap_ci(small_labels, small_scores, "auroc", n_boot=1000), repeats=2) / 1000
    print(f"bootstrap AUROC CI, 1000 resamples x 14 classes x 2,000 cases: {boot_s:.2f} s (budget 1-3 s)")

    goal = ours_move <= 10 and sk_move / ours_move >= 20
    print(f"goal (threshold move <= 10 ms and >= 20x): {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
