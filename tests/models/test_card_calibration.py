"""The model card's calibration field: validated once when the card is built, round-tripped in the checkpoint."""

from __future__ import annotations

import pytest

from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError
from cxr_core.models.card import ModelCard

BASE = dict(architecture="small_cnn", num_classes=2, preprocess=PreprocessConfig().to_dict())


def _card(task: str, **kw) -> ModelCard:
    return ModelCard(**BASE, label_space={"name": "x", "classes": ["A", "B"], "task": task}, **kw)


def test_calibration_round_trips_and_old_cards_are_uncalibrated():
    calibration = {"method": "temperature", "temperature": [1.5, 0.7], "fitted_on": "val"}
    card = _card("multilabel", calibration=calibration)
    again = ModelCard.from_json(card.to_json())
    assert again.calibration == calibration and again.temperature() == [1.5, 0.7]
    old = card.to_dict()
    del old["calibration"]
    assert ModelCard.from_dict(old).temperature() is None
    assert _card(
        "multiclass", calibration={"method": "temperature", "temperature": [2.0]}
    ).temperature() == [2.0]


@pytest.mark.parametrize(
    "task, calibration, message",
    [
        ("multilabel", {"method": "temperature", "temperature": [1.0]}, "2 positive finite"),
        ("multiclass", {"method": "temperature", "temperature": [1.0, 1.0]}, "one for the model"),
        ("multilabel", {"method": "temperature", "temperature": [1.0, 0.0]}, "positive"),
        ("multilabel", {"method": "temperature", "temperature": [1.0, float("nan")]}, "finite"),
        ("multilabel", {"method": "platt", "temperature": [1.0, 1.0]}, "must be"),
    ],
)
def test_bad_calibration_is_refused(task, calibration, message):
    with pytest.raises(CheckpointError, match=message):
        _card(task, calibration=calibration)
