"""Test-time augmentation: the averaged views, and refusal of unknown modes everywhere they enter."""

from __future__ import annotations

import numpy as np
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
    torch.testing.assert_close(
        class_probabilities(model, x, multilabel=True, tta="hflip"), torch.full((4, 3), 0.5)
    )


def test_unknown_mode_is_refused_by_scoring_config_and_card():
    with pytest.raises(ConfigError, match="vflip"):
        class_probabilities(_LeftMinusRight(), torch.rand(1, 1, 4, 4), multilabel=True, tta="vflip")
    with pytest.raises(ConfigError, match="eval.tta"):
        TrainConfig.from_dict({"data": {"path": "x"}, "eval": {"tta": "rotate"}}).validate()
    card = dict(
        architecture="small_cnn",
        num_classes=1,
        label_space={"name": "x", "classes": ["A"], "task": "multilabel"},
        preprocess={"input_size": 32, "cache_size": 32},
    )
    assert ModelCard(**card).tta == "none"
    with pytest.raises(CheckpointError, match="upgrade"):
        ModelCard(**card, tta="five-crop")
    assert set(TTA_MODES) == {"none", "hflip"}


def test_temperature_is_applied_after_averaging_and_matches_the_metrics_layer():
    from cxr_core.metrics import apply_temperature

    torch.manual_seed(1)
    x = torch.rand(5, 1, 8, 8)
    model = _LeftMinusRight()
    shifted = lambda batch: model(batch) + torch.tensor([0.3, -0.2, 0.1])  # noqa: E731 - hflip mean not 0.5
    for multilabel, temperature in ((True, [2.0, 0.5, 1.0]), (False, [1.7])):
        averaged = (
            class_probabilities(shifted, x, multilabel=multilabel, tta="hflip").double().numpy()
        )
        scaled = class_probabilities(
            shifted, x, multilabel=multilabel, tta="hflip", temperature=temperature
        )
        task = "multilabel" if multilabel else "multiclass"
        np.testing.assert_allclose(
            scaled.numpy(), apply_temperature(averaged, temperature, task), atol=1e-6
        )
        assert np.abs(scaled.double().numpy() - averaged).max() > 1e-3
    with pytest.raises(ConfigError, match="one positive temperature per class"):
        class_probabilities(model, x, multilabel=True, temperature=[1.0, -1.0, 1.0])
