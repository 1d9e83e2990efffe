"""Misspelt settings stop a run with the offending key, wherever they are written."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from cxr_core.data.dataset import AugmentConfig
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import ConfigError
from cxr_core.training import TrainConfig
from cxr_core.utils.settings import check_known_keys


@dataclass
class _Section:
    lr: float = 0.1
    epochs: int = 1


def test_unknown_keys_are_named_with_the_allowed_ones():
    check_known_keys(_Section, {"lr": 1.0}, "settings")
    with pytest.raises(ConfigError) as info:
        check_known_keys(_Section, {"lr": 1.0, "epohcs": 2, "batch": 3}, "optimiser settings")
    assert str(info.value) == "unknown optimiser settings 'batch', 'epohcs'; allowed: epochs, lr"


def test_every_settings_reader_refuses_a_typo():
    with pytest.raises(ConfigError, match="unknown augmentation settings 'hflp'"):
        AugmentConfig.from_dict({"hflp": True})
    with pytest.raises(ConfigError, match="unknown preprocessing settings 'input_sise'"):
        PreprocessConfig.from_dict({"input_sise": 224})
    with pytest.raises(
        ConfigError,
        match="unknown setting 'model.nme'; allowed: dropout, finetune, in_chans, name, weights",
    ):
        TrainConfig.from_dict({"data": {"path": "x"}, "model": {"nme": "small_cnn"}})
    with pytest.raises(ConfigError, match="unknown setting 'epoch'; allowed: .*epochs"):
        TrainConfig.from_dict({"data": {"path": "x"}, "epoch": 3})
