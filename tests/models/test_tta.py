"""Test-time augmentation: the averaged views, and refusal of unknown modes everywhere they enter."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.models.card import ModelCard
from cxr_core.models.tta import TTA_MODES, class_probabilities
from cxr_core.training import TrainConfig


class _LeftMinusRight(nn.Module):
    """Logits that change sign under a horizontal flip, so flip averaging is visible."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        diff = x[..., :half].mean(dim=(1, 2, 3)) - x[..., half:].mean(dim=(1, 2, 3))
        return torch.stack([diff, 2 * diff, -diff], dim=1)


def test_hflip_averages_probabilities_of_image_and_mirror():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    model = _LeftMinusRight()
    for multilabel in (True, False):
        activate = torch.sigmoid if multilabel else (lambda z: torch.softmax(z, dim=1))
        plain = class_probabilities(model, x, multilabel=multilabel, tta="none")
        torch.testing.assert_close(plain, activate(model(x)))
        averaged = class_probabilities(model, x, multilabel=multilabel, tta="hflip")
        expected = (activate(model(x)) + activate(model(torch.flip(x, dims=[-1])))) / 2
        torch.testing.assert_close(averaged, expected)
        assert (averaged - plain).abs().max() > 1e-3
    # sigmoid of opposite logits averages to exactly one half
    torch.testing.assert_close(class_probabilities(model, x, multilabel=True, tta="hflip"), torch.full((4, 3), 0.5))


def test_unknown_mode_is_refused_by_scoring_config_and_card():
    with pytest.raises(ConfigError, match="vflip"):
        class_probabilities(_LeftMinusRight(), torch.rand(1, 1, 4, 4), multilabel=True, tta="vflip")
    with pytest.raises(ConfigError, match="eval.tta"):
        TrainConfig.from_dict({"data": {"path": "x"}, "eval": {"tta": "rotate"}}).validate()
    card = dict(architecture="small_cnn", num_classes=1, label_space={"name": "x", "classes": ["A"], "task": "multilabel"},
                preprocess={"input_size": 32, "cache_size": 32})
    assert ModelCard(**card).tta == "none"
    with pytest.raises(CheckpointError, match="upgrade"):
        ModelCard(**card, tta="five-crop")
    assert set(TTA_MODES) == {"none", "hflip"}
