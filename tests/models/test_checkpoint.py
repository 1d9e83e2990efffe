"""Checkpoint files: round trips, fp16 storage, atomic writes and every refusal (never unpickling)."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError
from cxr_core.models import create_model
from cxr_core.models.card import FORMAT_VERSION, ModelCard
from cxr_core.models.checkpoint import (
    CARD_KEY,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
)
from cxr_core.utils.atomic import write_atomically

CLASSES = ("Atelectasis", "Cardiomegaly", "Pleural Effusion")


def _card(**kw) -> ModelCard:
    values = dict(
        architecture="small_cnn",
        num_classes=len(CLASSES),
        in_chans=1,
        label_space=LabelSpace("test", CLASSES).to_dict(),
        preprocess=PreprocessConfig(cache_size=64, input_size=64, in_chans=1).to_dict(),
        thresholds={"Atelectasis": 0.3, "Cardiomegaly": 0.5, "Pleural Effusion": 0.7},
        threshold_method="max_f1",
        validation={"macro_auroc": 0.8, "macro_auroc_ci": [0.7, 0.9]},
        provenance="synthetic",
    )
    values.update(kw)
    return ModelCard(**values)


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", len(CLASSES), in_chans=1).eval()


def test_round_trip_weights_card_and_outputs(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), _card())
    ckpt = load_checkpoint(path, expect_architecture="small_cnn", expect_classes=CLASSES)
    assert ckpt.card.to_dict() == json.loads(
        json.dumps(_card().to_dict() | {"created": ckpt.card.created})
    )
    assert ckpt.card.format_version == FORMAT_VERSION
    assert ckpt.label_space == LabelSpace("test", CLASSES)
    assert ckpt.preprocess == PreprocessConfig(cache_size=64, input_size=64, in_chans=1)
    for key, value in model.state_dict().items():
        assert torch.equal(ckpt.state_dict[key], value)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(ckpt.build_model()(x), model(x))
    assert read_model_card(path).thresholds == _card().thresholds
    assert ckpt.card.threshold_vector() == [0.3, 0.5, 0.7]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_header_length_starting_with_the_pickle_byte_still_loads(model, tmp_path):
    """A safetensors header length whose low byte is 0x80 (the pickle protocol marker) is not a pickle."""
    for pad in range(256):
        path = save_checkpoint(
            tmp_path / "m.safetensors", model.state_dict(), _card(provenance="x" * pad)
        )
        if path.read_bytes()[:1] == b"\x80":
            break
    else:
        pytest.fail("no padding gave a header length with low byte 0x80")
    assert load_checkpoint(path).card.provenance == "x" * pad


def test_half_storage_halves_size_and_loads_as_float32(model, tmp_path):
    full = save_checkpoint(tmp_path / "full.safetensors", model.state_dict(), _card())
    half = save_checkpoint(tmp_path / "half.safetensors", model.state_dict(), _card(), half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    raw = load_file(str(half))
    assert raw["classifier.1.weight"].dtype == torch.float16
    ckpt = load_checkpoint(half)
    assert ckpt.card.weights_dtype == "float16"
    for key, value in model.state_dict().items():
        loaded = ckpt.state_dict[key]
        if value.is_floating_point():
            assert loaded.dtype == torch.float32
            assert torch.equal(loaded, value.half().float())
        else:
            assert torch.equal(loaded, value)


def test_atomic_write_keeps_old_file_when_writing_fails(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), _card())
    before = path.read_bytes()

    def torn(tmp: Path) -> None:
        tmp.write_bytes(before[:100])
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, torn)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


class _Payload:
    """Unpickling this calls Path.touch(marker): what a malicious .pt file could do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_malicious_pickles_are_refused_and_never_executed(tmp_path):
    proof = tmp_path / "proof_marker"
    pickle.loads(pickle.dumps(_Payload(proof)))
    assert proof.exists(), (
        "the payload must really execute when unpickled, or this test proves nothing"
    )

    marker = tmp_path / "attack_marker"
    raw = tmp_path / "evil.pth"
    raw.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    zipped = tmp_path / "evil.pt"
    torch.save({"state_dict": _Payload(marker)}, zipped)
    disguised = tmp_path / "evil.safetensors"
    disguised.write_bytes(zipped.read_bytes())
    for path in (raw, zipped, disguised):
        with pytest.raises(CheckpointError, match="safetensors") as err:
            load_checkpoint(path)
        assert "pickle" in str(err.value)
        with pytest.raises(CheckpointError):
            read_model_card(path)
    assert not marker.exists()


def test_truncated_corrupted_and_foreign_files(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), _card())
    data = path.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupted"):
        load_checkpoint(truncated)

    flipped = bytearray(data)
    flipped[-10] ^= 0xFF  # inside the tensor bytes: the header still parses
    corrupted = tmp_path / "corrupted.safetensors"
    corrupted.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(corrupted)

    for name, content in (
        ("empty.safetensors", b""),
        ("text.safetensors", b"hello world, not weights"),
    ):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_missing_card_and_newer_format(model, tmp_path):
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    with pytest.raises(CheckpointError, match="model card"):
        load_checkpoint(bare)

    future = _card().to_dict() | {"format_version": FORMAT_VERSION + 1}
    newer = tmp_path / "newer.safetensors"
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(newer),
        metadata={CARD_KEY: json.dumps(future)},
    )
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(newer)

    broken = tmp_path / "broken.safetensors"
    save_file({"x": torch.zeros(1)}, str(broken), metadata={CARD_KEY: "{not json"})
    with pytest.raises(CheckpointError, match="JSON"):
        load_checkpoint(broken)


def test_expectations_and_weights_that_do_not_fit(model, tmp_path):
    path = save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), _card())
    with pytest.raises(CheckpointError, match="densenet121"):
        load_checkpoint(path, expect_architecture="densenet121")
    with pytest.raises(CheckpointError, match="Pneumonia"):
        load_checkpoint(path, expect_classes=("Normal", "Pneumonia"))

    state = dict(model.state_dict())
    dropped = next(iter(state))
    state.pop(dropped)
    state["extra.weight"] = torch.zeros(3)
    bad = save_checkpoint(tmp_path / "bad.safetensors", state, _card())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert f"1 missing tensors [{dropped}]" in str(
        err.value
    ) and "1 unexpected tensors [extra.weight]" in str(err.value)

    wrong_head = create_model("small_cnn", 5, in_chans=1).state_dict()
    mismatch = save_checkpoint(tmp_path / "shape.safetensors", wrong_head, _card())
    with pytest.raises(
        CheckpointError,
        match=r"2 tensors of another shape \[classifier.1.weight \(5, 256\) vs \(3, 256\)",
    ):
        load_checkpoint(mismatch)


def test_card_rejects_inconsistent_fields():
    with pytest.raises(CheckpointError, match="classes"):
        _card(num_classes=2)
    with pytest.raises(CheckpointError, match="Pneumonia"):
        _card(thresholds={"Pneumonia": 0.5})
    with pytest.raises(CheckpointError, match="lacks"):
        ModelCard.from_dict({"format_version": 1, "architecture": "small_cnn"})
