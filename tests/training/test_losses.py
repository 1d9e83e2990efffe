"""Losses: masking of unknown labels, class weighting, focal loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from cxr_core.errors import ConfigError
from cxr_core.training.losses import (
    FocalLoss,
    MaskedBCEWithLogitsLoss,
    MaskedCrossEntropyLoss,
    build_loss,
    class_weights_from_labels,
    pos_weight_from_labels,
)

NAN = float("nan")


@pytest.fixture
def batch():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    targets = torch.tensor(
        [
            [1, 0, NAN, 1],
            [0, NAN, NAN, 0],
            [1, 1, 0, NAN],
            [NAN, 0, 1, 1],
            [0, 0, 0, 0],
            [1, NAN, 1, 0],
        ]
    )
    return logits, targets


def test_masked_bce_equals_torch_bce_on_known_entries(batch):
    logits, targets = batch
    known = ~torch.isnan(targets)
    expected = F.binary_cross_entropy_with_logits(logits[known], targets[known])
    torch.testing.assert_close(MaskedBCEWithLogitsLoss()(logits, targets), expected)


def test_masked_bce_with_pos_weight(batch):
    logits, targets = batch
    pw = torch.tensor([2.0, 0.5, 3.0, 1.0])
    known = ~torch.isnan(targets)
    full = F.binary_cross_entropy_with_logits(
        logits, torch.nan_to_num(targets), pos_weight=pw, reduction="none"
    )
    torch.testing.assert_close(MaskedBCEWithLogitsLoss(pw)(logits, targets), full[known].mean())


def test_masked_entries_get_zero_gradient(batch):
    logits, targets = batch
    MaskedBCEWithLogitsLoss()(logits, targets).backward()
    unknown = torch.isnan(targets)
    assert torch.all(logits.grad[unknown] == 0)
    assert torch.all(logits.grad[~unknown] != 0)


@pytest.mark.parametrize("loss", [MaskedBCEWithLogitsLoss(), FocalLoss(), MaskedCrossEntropyLoss()])
def test_all_unknown_gives_zero_loss_and_gradients(loss):
    logits = torch.randn(3, 4, requires_grad=True)
    value = loss(logits, torch.full((3, 4), NAN))
    assert value.item() == 0.0
    value.backward()
    assert torch.all(logits.grad == 0)


def test_pos_weight_counts_known_entries_and_clips():
    labels = np.array(
        [[1, 0, NAN, 0], [0, 0, NAN, 0], [0, 1, NAN, 0], [0, NAN, 1, 0], [0, 0, 0, 0]]
    )
    pw = pos_weight_from_labels(labels, max_weight=10.0)
    assert pw.dtype == torch.float32
    # class 0: 1 pos / 4 neg; class 1: 1 pos / 3 neg; class 2: 1 pos / 1 neg; class 3: no positive -> max
    torch.testing.assert_close(pw, torch.tensor([4.0, 3.0, 1.0, 10.0]))
    many_pos = np.ones((200, 1))
    many_pos[0, 0] = 0
    assert pos_weight_from_labels(many_pos, max_weight=10.0).item() == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        pos_weight_from_labels(np.zeros(5))


def test_class_weights_match_sklearn_balanced():
    idx = np.array([0] * 50 + [1] * 30 + [2] * 5)
    onehot = np.eye(3)[idx]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=idx)
    torch.testing.assert_close(
        class_weights_from_labels(onehot), torch.tensor(expected, dtype=torch.float32)
    )
    torch.testing.assert_close(
        class_weights_from_labels(idx, num_classes=3), torch.tensor(expected, dtype=torch.float32)
    )
    with_unknown = np.vstack([onehot, [[NAN, NAN, NAN]]])
    torch.testing.assert_close(
        class_weights_from_labels(with_unknown), torch.tensor(expected, dtype=torch.float32)
    )
    assert class_weights_from_labels(idx, num_classes=4)[3].item() == 50.0


def test_focal_with_gamma_zero_is_bce(batch):
    logits, targets = batch
    pw = torch.tensor([2.0, 1.0, 1.0, 0.5])
    torch.testing.assert_close(
        FocalLoss(gamma=0.0)(logits, targets), MaskedBCEWithLogitsLoss()(logits, targets)
    )
    torch.testing.assert_close(
        FocalLoss(gamma=0.0, pos_weight=pw)(logits, targets),
        MaskedBCEWithLogitsLoss(pw)(logits, targets),
    )


def test_focal_formula_on_one_entry():
    logit, gamma, alpha = 1.5, 2.0, 0.25
    p = 1 / (1 + math.exp(-logit))
    expected_pos = -alpha * (1 - p) ** gamma * math.log(p)
    expected_neg = -(1 - alpha) * p**gamma * math.log(1 - p)
    loss = FocalLoss(gamma=gamma, alpha=alpha)
    assert loss(torch.tensor([[logit]]), torch.tensor([[1.0]])).item() == pytest.approx(
        expected_pos, rel=1e-5
    )
    assert loss(torch.tensor([[logit]]), torch.tensor([[0.0]])).item() == pytest.approx(
        expected_neg, rel=1e-5
    )
    easy, hard = torch.tensor([[4.0]]), torch.tensor([[-1.0]])
    one = torch.tensor([[1.0]])
    ratio_easy = FocalLoss(gamma=2)(easy, one) / MaskedBCEWithLogitsLoss()(easy, one)
    ratio_hard = FocalLoss(gamma=2)(hard, one) / MaskedBCEWithLogitsLoss()(hard, one)
    assert ratio_easy < 0.01 < 0.5 < ratio_hard  # easy examples are down-weighted far more


def test_cross_entropy_one_hot_indices_weights_and_unknown_rows():
    torch.manual_seed(1)
    logits = torch.randn(5, 3)
    idx = torch.tensor([0, 2, 1, 2, 0])
    onehot = F.one_hot(idx, 3).float()
    w = torch.tensor([1.0, 2.0, 0.5])
    torch.testing.assert_close(
        MaskedCrossEntropyLoss()(logits, onehot), F.cross_entropy(logits, idx)
    )
    torch.testing.assert_close(
        MaskedCrossEntropyLoss(w)(logits, idx), F.cross_entropy(logits, idx, weight=w)
    )
    onehot[1] = NAN
    keep = torch.tensor([0, 2, 3, 4])
    torch.testing.assert_close(
        MaskedCrossEntropyLoss(w)(logits, onehot),
        F.cross_entropy(logits[keep], idx[keep], weight=w),
    )


def test_build_loss():
    assert isinstance(build_loss("multilabel"), MaskedBCEWithLogitsLoss)
    focal = build_loss("multilabel", "focal", gamma=1.0, alpha=0.5)
    assert isinstance(focal, FocalLoss) and focal.gamma == 1.0 and focal.alpha == 0.5
    ce = build_loss("multiclass", "ce", class_weight=torch.tensor([1.0, 3.0]))
    assert isinstance(ce, MaskedCrossEntropyLoss) and ce.class_weight.tolist() == [1.0, 3.0]
    bce = build_loss("multilabel", pos_weight=torch.tensor([2.0]))
    assert bce.pos_weight.tolist() == [2.0]
    for task, kind in [
        ("multilabel", "ce"),
        ("multiclass", "bce"),
        ("multiclass", "focal"),
        ("regression", "bce"),
    ]:
        with pytest.raises(ConfigError):
            build_loss(task, kind)
    with pytest.raises(ConfigError):
        FocalLoss(gamma=-1)
