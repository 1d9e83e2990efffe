"""Crafted or damaged model cards and weights: every one is a CheckpointError saying what is wrong."""

from __future__ import annotations

import json

import pytest
import torch

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError
from cxr_core.models import create_model
from cxr_core.models.card import MAX_CARD_DEPTH, ModelCard, json_depth
from cxr_core.models.checkpoint import (
    DIGEST_KEY,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
)
from tests.checkpoint_fixtures import write_crafted_checkpoint

CLASSES = ("Atelectasis", "Cardiomegaly")


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", len(CLASSES), in_chans=1).eval()


def _card_dict(**kw) -> dict:
    card = ModelCard(
        architecture="small_cnn",
        num_classes=2,
        in_chans=1,
        label_space=LabelSpace("test", CLASSES).to_dict(),
        preprocess=PreprocessConfig(cache_size=64, input_size=64, in_chans=1).to_dict(),
        thresholds={"Atelectasis": 0.3, "Cardiomegaly": 0.6},
    )
    return card.to_dict() | kw


def test_valid_crafted_file_loads(model, tmp_path):
    path = write_crafted_checkpoint(tmp_path / "ok.safetensors", model.state_dict(), _card_dict())
    assert load_checkpoint(path).card.thresholds == {"Atelectasis": 0.3, "Cardiomegaly": 0.6}


def test_deep_nesting_is_refused_before_parsing(model, tmp_path):
    deep = json.dumps(_card_dict())[:-1] + ', "training": ' + "[" * 100_000 + "]" * 100_000 + "}"
    path = write_crafted_checkpoint(tmp_path / "deep.safetensors", model.state_dict(), deep)
    with pytest.raises(CheckpointError, match="nested 100001 levels"):
        read_model_card(path)
    assert (
        json_depth('{"a": "[[[[", "b": [{"c": "\\"{"}]}') == 3
    )  # brackets inside strings do not count
    ok = '{"x": ' + "[" * (MAX_CARD_DEPTH - 1) + "]" * (MAX_CARD_DEPTH - 1) + "}"
    assert json_depth(ok) == MAX_CARD_DEPTH


def test_oversized_card_is_refused(model, tmp_path):
    big = _card_dict(provenance="x" * 2_000_000)
    path = write_crafted_checkpoint(tmp_path / "big.safetensors", model.state_dict(), big)
    with pytest.raises(CheckpointError, match="over the 1,000,000 limit"):
        load_checkpoint(path)


@pytest.mark.parametrize("value", ["high", float("nan"), 7.0, -0.1, True, None, [0.5]])
def test_thresholds_must_be_finite_numbers_in_unit_interval(model, tmp_path, value):
    card = _card_dict(thresholds={"Atelectasis": value})
    path = write_crafted_checkpoint(tmp_path / "t.safetensors", model.state_dict(), card)
    with pytest.raises(CheckpointError, match="threshold for 'Atelectasis'.*between 0 and 1"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "key,value",
    [
        ("input_size", 100000),
        ("input_size", 8),
        ("cache_size", 100000),
        ("input_size", "224"),
        ("input_size", 64.5),
    ],
)
def test_absurd_image_sizes_are_refused_without_allocating(model, tmp_path, key, value):
    card = _card_dict()
    card["preprocess"][key] = value
    path = write_crafted_checkpoint(tmp_path / "s.safetensors", model.state_dict(), card)
    with pytest.raises(CheckpointError, match=f"{key} is .*between 16 and 2048"):
        load_checkpoint(path)


def test_ensemble_member_input_size_is_bounded():
    members = [{"architecture": "small_cnn", "input_size": 100000}] * 2
    with pytest.raises(CheckpointError, match="member's input_size is 100000"):
        ModelCard.from_dict(_card_dict(architecture="ensemble", members=members))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"preprocess": {}}, "no preprocessing"),
        ({"preprocess": "224"}, "not a JSON object"),
        ({"preprocess": {"input_size": 64, "gamma": 2}}, "preprocessing settings are invalid"),
        (
            {"label_space": {"name": "x", "classes": "AB", "task": "multilabel"}},
            "list of class names",
        ),
        (
            {"label_space": {"name": "x", "classes": ["A"], "task": "multilabel"}},
            "2 classes but its label space lists 1",
        ),
        ({"label_space": {"classes": list(CLASSES)}}, "label space is invalid"),
        ({"num_classes": "2"}, "num_classes"),
        ({"dropout": 5}, "dropout"),
        ({"weights_dtype": "int8"}, "int8"),
        ({"training": [1, 2]}, "'training' must be a JSON object"),
        ({"thresholds": {"Hernia": 0.5}}, "does not predict"),
    ],
)
def test_malformed_fields_are_checkpoint_errors(model, tmp_path, change, message):
    path = write_crafted_checkpoint(
        tmp_path / "m.safetensors", model.state_dict(), _card_dict(**change)
    )
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_nan_weights_are_refused(model, tmp_path):
    state = {
        k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
        for k, v in model.state_dict().items()
    }
    path = write_crafted_checkpoint(tmp_path / "nan.safetensors", state, _card_dict())
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_checkpoint(path)
    one_inf = dict(model.state_dict())
    key = next(k for k, v in one_inf.items() if v.is_floating_point())
    one_inf[key] = one_inf[key].clone()
    one_inf[key].view(-1)[0] = float("inf")
    with pytest.raises(CheckpointError, match=key):
        load_checkpoint(
            write_crafted_checkpoint(tmp_path / "inf.safetensors", one_inf, _card_dict())
        )


def test_weights_of_another_dtype_than_declared_are_refused(model, tmp_path):
    int8 = {
        k: (v.to(torch.int8) if v.is_floating_point() else v) for k, v in model.state_dict().items()
    }
    with pytest.raises(
        CheckpointError, match="stored as torch.int8 but the model card declares float32"
    ):
        load_checkpoint(write_crafted_checkpoint(tmp_path / "i8.safetensors", int8, _card_dict()))
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="float16 but the model card declares float32"):
        load_checkpoint(write_crafted_checkpoint(tmp_path / "f16.safetensors", half, _card_dict()))
    # what save_checkpoint(half=True) writes declares float16 and loads as float32
    ckpt = load_checkpoint(
        save_checkpoint(
            tmp_path / "ok16.safetensors",
            model.state_dict(),
            ModelCard.from_dict(_card_dict()),
            half=True,
        )
    )
    assert all(v.dtype == torch.float32 for v in ckpt.state_dict.values() if v.is_floating_point())


def test_missing_or_renamed_checksum_is_refused(model, tmp_path):
    path = write_crafted_checkpoint(
        tmp_path / "nodigest.safetensors",
        model.state_dict(),
        _card_dict(),
        digest=False,
        metadata={"cxr_weights_sha256_renamed": "0" * 64},
    )
    with pytest.raises(CheckpointError, match=f"no weights checksum \\({DIGEST_KEY}\\)"):
        load_checkpoint(path)


def test_cxr_evaluate_refuses_a_card_without_preprocessing(model, tmp_path, capsys):
    from cxr_core.cli.main import main

    path = write_crafted_checkpoint(
        tmp_path / "nopre.safetensors", model.state_dict(), _card_dict(preprocess={})
    )
    assert (
        main(["evaluate", "--checkpoint", str(path), "--data", str(tmp_path), "--no-progress"]) == 2
    )
    assert "no preprocessing settings" in capsys.readouterr().err
