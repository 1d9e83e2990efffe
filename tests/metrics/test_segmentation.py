from __future__ import annotations

import numpy as np
import pytest

from cxr_core.errors import MetricInputError
from cxr_core.metrics.segmentation import (
    dice_score,
    hd95,
    iou_score,
    mean_with_ci,
    per_image_scores,
    segmentation_summary,
)


def _hand_example() -> tuple[np.ndarray, np.ndarray]:
    pred = np.zeros((4, 4), bool)
    pred[0, 0:4] = True  # 4 pixels
    target = np.zeros((4, 4), bool)
    target[0, 1:4] = True
    target[1, 0:3] = True  # 6 pixels, 3 shared with pred
    return pred, target


def test_dice_and_iou_match_a_hand_computed_example():
    pred, target = _hand_example()
    # |A|=4, |B|=6, |A and B|=3, |A or B|=7
    assert dice_score(pred, target) == pytest.approx(2 * 3 / (4 + 6))
    assert iou_score(pred, target) == pytest.approx(3 / 7)
    batch = np.stack([pred, target])
    np.testing.assert_allclose(dice_score(batch, np.stack([target, target])), [0.6, 1.0])


def test_two_empty_masks_agree_perfectly_and_one_empty_scores_zero():
    empty, full = np.zeros((5, 5), bool), np.ones((5, 5), bool)
    assert dice_score(empty, empty) == 1.0 and iou_score(empty, empty) == 1.0
    assert dice_score(empty, full) == 0.0 and iou_score(full, empty) == 0.0
    assert hd95(empty, empty) == 0.0
    assert np.isnan(hd95(empty, full))


def _border_points(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    interior = (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
    return np.argwhere(mask & ~interior).astype(float)


def test_hd95_equals_brute_force_surface_distances():
    rng = np.random.default_rng(3)
    a = np.zeros((40, 40), bool)
    a[5:25, 8:30] = True
    b = np.zeros((40, 40), bool)
    b[9:31, 10:28] = True
    b[rng.integers(0, 40, 6), rng.integers(0, 40, 6)] = True  # stray pixels far from the region
    pa, pb = _border_points(a), _border_points(b)
    d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    expected = np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95)
    assert hd95(a, b) == pytest.approx(expected)
    assert hd95(a, b, spacing=0.5) == pytest.approx(expected * 0.5)


def test_a_shifted_square_has_hd95_equal_to_the_shift():
    a = np.zeros((30, 30), bool)
    a[5:15, 5:15] = True
    b = np.roll(a, 3, axis=1)
    assert hd95(a, b) == pytest.approx(3.0)


def test_shapes_must_match():
    with pytest.raises(MetricInputError, match="differ in shape"):
        dice_score(np.zeros((4, 4)), np.zeros((4, 5)))


def test_constant_scores_have_a_degenerate_interval():
    ci = mean_with_ci(np.full(10, 0.9), n_boot=200)
    assert (ci.mean, ci.low, ci.high, ci.n) == (
        pytest.approx(0.9),
        pytest.approx(0.9),
        pytest.approx(0.9),
        10,
    )


def test_patient_level_interval_treats_a_patient_s_images_as_one_unit():
    values = np.random.default_rng(0).uniform(0.8, 1.0, 30)
    by_image = mean_with_ci(values, None, n_boot=500, seed=7)
    # Every patient twice with the same value: resampling patients must give the interval of the
    # 30 distinct values, whereas resampling the 60 images would narrow it.
    doubled, patients = (
        np.repeat(values, 2),
        np.repeat([f"p{i:02d}" for i in range(30)], 2),
    )  # ids sort like the values
    by_patient = mean_with_ci(doubled, patients, n_boot=500, seed=7)
    assert (by_patient.low, by_patient.high) == pytest.approx((by_image.low, by_image.high))
    naive = mean_with_ci(doubled, None, n_boot=500, seed=7)
    assert naive.high - naive.low < by_patient.high - by_patient.low
    assert by_patient.low < values.mean() < by_patient.high


def test_summary_leaves_out_undefined_hd95():
    pred = np.zeros((3, 8, 8), bool)
    target = np.zeros((3, 8, 8), bool)
    pred[0, 2:5, 2:5] = target[0, 2:5, 2:5] = True
    pred[1, 1:3, 1:3] = target[1, 1:4, 1:4] = True
    target[2, 0:2, 0:2] = True  # nothing predicted: HD95 undefined
    scores = per_image_scores(pred, target)
    summary = segmentation_summary(scores, n_boot=50)
    assert np.isnan(scores["hd95"][2])
    assert summary["hd95"].n == 2 and summary["dice"].n == 3
    assert summary["dice"].mean == pytest.approx((1.0 + 2 * 4 / (4 + 9) + 0.0) / 3)
