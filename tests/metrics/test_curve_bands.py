"""ROC and PR bands against a brute-force loop over the same patient resamples (scikit-learn curves)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve, roc_curve

from cxr_core.metrics import resample_weights
from cxr_core.metrics.curve_bands import curve_bands


def data(seed: int = 0, n: int = 120):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < [0.35, 0.0]).astype(float)
    scores = np.round(labels + rng.normal(0, 0.8, labels.shape), 1)  # rounded: ties
    labels[rng.random(n) < 0.05, 0] = np.nan
    groups = (np.arange(n) // 2).astype(str)
    return labels, scores, groups


def tpr_at(fpr_grid: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return np.array([tpr[fpr <= f].max() for f in fpr_grid])


def precision_at(recall_grid: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    precision, recall, thresholds = precision_recall_curve(y, s, drop_intermediate=False)
    # highest threshold whose recall reaches r: thresholds ascend, recall descends
    out = []
    for r in recall_grid:
        reaching = np.nonzero(recall[:-1] >= r)[0]
        out.append(precision[reaching.max()])
    return np.array(out)


def test_bands_equal_a_brute_force_loop_over_the_same_resamples():
    labels, scores, groups = data()
    bands = curve_bands(labels, scores, groups=groups, n_boot=40, seed=3, grid_points=21)
    grid = bands[0].roc.x
    rows = np.arange(len(labels))
    rocs, prs = [], []
    for chunk in resample_weights(len(labels), groups, n_boot=40, seed=3):
        for w in chunk.astype(int):
            picked = np.repeat(rows, w)
            y, s = labels[picked, 0], scores[picked, 0]
            known = ~np.isnan(y)
            rocs.append(tpr_at(grid, y[known], s[known]))
            prs.append(precision_at(grid, y[known], s[known]))
    for band, draws in ((bands[0].roc, rocs), (bands[0].pr, prs)):
        low, high = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
        np.testing.assert_allclose(band.low, low, atol=1e-12)
        np.testing.assert_allclose(band.high, high, atol=1e-12)
    assert bands[0].n_used == 40


def test_band_holds_the_curve_and_narrows_with_more_patients():
    labels, scores, groups = data(1, n=120)
    big_labels, big_scores, big_groups = data(1, n=1200)
    small = curve_bands(labels, scores, groups=groups, n_boot=200)[0].roc
    big = curve_bands(big_labels, big_scores, groups=big_groups, n_boot=200)[0].roc
    known = ~np.isnan(labels[:, 0])
    curve = tpr_at(small.x, labels[known, 0], scores[known, 0])
    inside = (small.low - 1e-12 <= curve) & (curve <= small.high + 1e-12)
    assert inside.mean() > 0.9
    assert np.nanmean(big.high - big.low) < 0.5 * np.nanmean(small.high - small.low)


def test_a_class_without_positives_has_no_band():
    labels, scores, groups = data(2)
    bands = curve_bands(labels, scores, groups=groups, n_boot=20)
    assert np.isnan(bands[1].roc.low).all() and np.isnan(bands[1].pr.high).all()
    assert bands[1].n_used == 0
    with pytest.raises(ValueError, match="at least one resample"):
        curve_bands(labels, scores, n_boot=0)
