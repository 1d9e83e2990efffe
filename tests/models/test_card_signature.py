"""Cards are signed as a whole: an edited card is refused naming the fields that changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cxr_core.cli.main import main
from cxr_core.data.labels import LabelSpace
from cxr_core.errors import CheckpointError
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.card_signature import card_signature, changed_fields
from cxr_core.models.checkpoint import (
    CARD_KEY,
    SIGNATURE_KEY,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
    sign_checkpoint,
    stamp_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLED_PNEUMONIA = REPO / "checkpoints" / "pneumonia" / "model.safetensors"


def _tiny(path: Path, **card_fields) -> Path:
    torch.manual_seed(0)
    model = create_model("small_cnn", 2, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=2,
        label_space=LabelSpace("pneumonia", ("Normal", "Pneumonia"), "multiclass").to_dict(),
        preprocess={"cache_size": 64, "input_size": 48, "in_chans": 1},
        in_chans=1,
        **card_fields,
    )
    return save_checkpoint(path, model.state_dict(), card)


def _edit(path: Path, change, *, drop_signature: bool = False) -> Path:
    """Rewrite ``path`` with ``change(card_dict)`` applied to its card, tensors and the rest of
    the metadata as they were (what a hand edit or another tool does)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    card = json.loads(metadata[CARD_KEY])
    change(card)
    metadata[CARD_KEY] = json.dumps(card)
    if drop_signature:
        del metadata[SIGNATURE_KEY]
    save_file(tensors, str(path), metadata=metadata)
    return path


def _reverse_classes(card: dict) -> None:
    card["label_space"]["classes"].reverse()


def test_reversed_classes_of_the_bundled_model_are_refused(tmp_path):
    """Today's hole: reversing label_space.classes silently swapped Normal and Pneumonia."""
    path = shutil.copy(BUNDLED_PNEUMONIA, tmp_path / "model.safetensors")
    assert load_checkpoint(path).card.classes == ("Normal", "Pneumonia")
    _edit(Path(path), _reverse_classes)
    for read in (load_checkpoint, read_model_card, Predictor.from_checkpoint):
        with pytest.raises(CheckpointError, match=r"card fields label_space\.classes changed"):
            read(path)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda c: c["thresholds"].update(Pneumonia=0.01), "thresholds.Pneumonia"),
        (lambda c: c["preprocess"].update(input_size=32), "preprocess.input_size"),
        (
            lambda c: c.update(calibration={"method": "temperature", "temperature": [9.0]}),
            "calibration.method, calibration.temperature",
        ),
        (lambda c: c["gate"].update(threshold=1e9), "gate.threshold"),
        (lambda c: c.update(tta="hflip"), "tta"),
        (lambda c: c.update(future_field={"x": 1}), "future_field"),
        (lambda c: c.pop("validation"), "validation"),
    ],
)
def test_any_edited_field_is_refused_by_name(tmp_path, change, named):
    path = _tiny(tmp_path / "m.safetensors", thresholds={"Pneumonia": 0.5}, gate={"threshold": 3.0})
    _edit(path, change)
    with pytest.raises(CheckpointError, match="modified after cxr signed it") as info:
        load_checkpoint(path)
    assert f"card fields {named} changed" in str(info.value)
    assert f"cxr card sign --checkpoint {path}" in str(info.value)


def test_a_card_of_the_previous_format_is_refused_with_the_command_that_signs_it(tmp_path, capsys):
    path = _edit(_tiny(tmp_path / "old.safetensors"), lambda c: None, drop_signature=True)
    with pytest.raises(CheckpointError, match="written before model cards were signed") as info:
        load_checkpoint(path)
    assert f"cxr card sign --checkpoint {path}" in str(info.value)
    assert main(["card", "sign", "--checkpoint", str(path)]) == 0
    assert "signed the model card" in capsys.readouterr().err
    assert load_checkpoint(path).card.classes == ("Normal", "Pneumonia")


def test_signing_keeps_the_weights_byte_for_byte_and_stamping_re_signs(tmp_path):
    path = _tiny(tmp_path / "m.safetensors")
    before = load_checkpoint(path)
    _edit(path, lambda c: None, drop_signature=True)
    sign_checkpoint(path)
    after = load_checkpoint(path)
    for name, value in before.state_dict.items():
        assert torch.equal(value, after.state_dict[name])
    gate = {"mean": torch.zeros(4)}
    card = after.card
    card.thresholds = {"Pneumonia": 0.7}
    stamp_checkpoint(path, card, gate)  # what cxr gate fit / card refresh do
    stamped = load_checkpoint(path)
    assert stamped.card.thresholds == {"Pneumonia": 0.7} and torch.equal(
        stamped.gate["mean"], gate["mean"]
    )


def test_the_checksum_covers_the_weights_and_gate_entries():
    card = {"a": 1, "label_space": {"classes": ["x", "y"]}}
    base = card_signature(card, "w" * 64, "g" * 64)
    assert card_signature(card, "w" * 64, "g" * 64) == base
    assert card_signature(card, "v" * 64, "g" * 64)["sha256"] != base["sha256"]
    assert card_signature(card, "w" * 64, "")["sha256"] != base["sha256"]
    swapped = {"a": 1, "label_space": {"classes": ["y", "x"]}}
    assert changed_fields(base, swapped) == ["label_space.classes"]
    assert changed_fields(base, card) == []
    assert changed_fields(base, {**card, "new": {"b": 2}}) == ["new"]
    assert changed_fields(base, {"label_space": card["label_space"]}) == ["a"]
