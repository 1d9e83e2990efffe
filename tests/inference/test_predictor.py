"""Predictor: parity with evaluation, thresholds, TTA, thread safety, refusing bad checkpoints."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxr_core.data.cache import ImageCache
from cxr_core.data.formats.files import list_image_files
from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14, LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import (
    CheckpointError,
    ConfigError,
    ImageLoadError,
    UnknownClassError,
)
from cxr_core.evaluation.run import predict_split
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint
from tests.checkpoint_fixtures import write_crafted_checkpoint

PREPROCESS = PreprocessConfig(cache_size=64, input_size=48, in_chans=1)


def write_checkpoint(path: Path, label_space: LabelSpace = NIH14, **card_fields) -> Path:
    torch.manual_seed(0)
    model = create_model("small_cnn", label_space.num_classes, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=label_space.num_classes,
        label_space=label_space.to_dict(),
        preprocess=PREPROCESS.to_dict(),
        in_chans=1,
        **card_fields,
    )
    return save_checkpoint(path, model.state_dict(), card)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "model.safetensors", thresholds={"Mass": 0.3}
    )


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def nih_paths(nih14_root) -> list[Path]:
    return sorted((nih14_root / "images").glob("*.png"))[:6]


@pytest.fixture(scope="module")
def nih_images(nih_paths):
    return [load_image(p) for p in nih_paths]


def test_probabilities_equal_evaluation(checkpoint, predictor, nih_paths, nih_images, tmp_path):
    frame = pd.DataFrame(
        {
            "image_id": [p.name for p in nih_paths],
            "path": [str(p) for p in nih_paths],
            "patient_id": [p.name[:8] for p in nih_paths],
            "view": "PA",
            "split": "test",
            **{cls: 0.0 for cls in NIH14.classes},
        }
    )
    manifest = Manifest(frame, NIH14, "test")
    cache = ImageCache.build(
        manifest, tmp_path / "cache", PREPROCESS.cache_size, workers=1, progress=False
    )
    evaluated = predict_split(
        checkpoint, manifest, cache, batch_size=4, device="cpu", progress=False
    )
    expected = evaluated[[f"prob:{c}" for c in NIH14.classes]].to_numpy()

    got = predictor.predict_probabilities(nih_images, batch_size=5)
    assert got.shape == (6, 14)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    from_files = predictor.predict_files(nih_paths, batch_size=4)
    got_files = np.array(
        [[r.prediction.probabilities[c] for c in NIH14.classes] for r in from_files]
    )
    np.testing.assert_allclose(got_files, expected, atol=1e-6, rtol=0)
    # also the spread is real (a constant output would make the comparison vacuous)
    assert np.ptp(expected) > 1e-3


def test_checkpoint_thresholds_and_overrides(predictor, nih_images):
    assert predictor.thresholds["Mass"] == 0.3 and predictor.thresholds["Hernia"] == 0.5
    pred = predictor.predict(nih_images[:1])[0]
    expected = [c for c in NIH14.classes if pred.probabilities[c] >= (0.3 if c == "Mass" else 0.5)]
    assert pred.positive == expected
    assert pred.name.endswith(".png")
    everything = predictor.predict(nih_images[:1], thresholds={c: 0.0 for c in NIH14.classes})[0]
    assert everything.positive == list(NIH14.classes)
    # other spellings are accepted; the override applies to that class only
    nothing_for_effusion = predictor.predict(nih_images[:1], thresholds={"Effusion": 1.0})[0]
    assert "Pleural Effusion" not in nothing_for_effusion.positive
    assert nothing_for_effusion.thresholds["Mass"] == 0.3
    with pytest.raises(UnknownClassError, match="Fracture"):
        predictor.predict(nih_images[:1], thresholds={"Fracture": 0.5})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        predictor.predict(nih_images[:1], thresholds={"Mass": 1.5})


def test_arrays_and_uint8_inputs_match_loaded_images(predictor, nih_images):
    pixels = nih_images[0].pixels
    as_uint8 = np.round(pixels * 255).astype(np.uint8)
    a, b, c = predictor.predict_probabilities([nih_images[0], pixels, as_uint8])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)
    with pytest.raises(ImageLoadError, match="grayscale"):
        predictor.predict([np.zeros((8, 8, 3), np.float32)])


def test_tta_averages_with_horizontal_flip(checkpoint, predictor, nih_images):
    tta = Predictor.from_checkpoint(checkpoint, device="cpu", tta="hflip", warmup=False)
    assert predictor.tta == "none"  # the card's mode when none is asked for
    image = nih_images[1].pixels
    flipped = np.ascontiguousarray(image[:, ::-1])
    plain, mirrored = predictor.predict_probabilities([image, flipped])
    np.testing.assert_allclose(
        tta.predict_probabilities([image])[0], (plain + mirrored) / 2, atol=1e-6
    )


def test_multiclass_uses_softmax_and_argmax(tmp_path, nih_images):
    space = LabelSpace("pneumonia", ("Normal", "Pneumonia"), task="multiclass")
    pred = Predictor.from_checkpoint(
        write_checkpoint(tmp_path / "mc.safetensors", space), device="cpu"
    )
    results = pred.predict(nih_images[:3])
    for r in results:
        assert sum(r.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert r.positive == [max(r.probabilities, key=r.probabilities.get)]


def test_concurrent_predictions_match_sequential(predictor, nih_images):
    expected = predictor.predict_probabilities(nih_images)
    results: dict[int, list[tuple[int, np.ndarray]]] = {i: [] for i in range(4)}

    def work(i: int) -> None:
        for k in range(4):
            shift = (i + k) % 6
            rotated = nih_images[shift:] + nih_images[:shift]
            results[i].append((shift, predictor.predict_probabilities(rotated, batch_size=1 + k)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r) for r in results.values()) == 16
    for runs in results.values():
        for shift, got in runs:
            np.testing.assert_allclose(got, np.roll(expected, -shift, axis=0), atol=1e-6, rtol=0)


def test_predict_files_reports_bad_files_and_keeps_order(predictor, nih_paths, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(nih_paths[0].read_bytes()[:300])
    paths = [nih_paths[0], broken, nih_paths[1], tmp_path / "absent.png", nih_paths[2]]
    results = predictor.predict_files(paths, batch_size=2, workers=2)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [bool(r.error) for r in results] == [False, True, False, True, False]
    assert "broken.png" in results[1].error and results[1].prediction is None
    assert "not found" in results[3].error
    direct = predictor.predict_probabilities([load_image(p) for p in nih_paths[:3]])
    got = np.array(
        [[r.prediction.probabilities[c] for c in NIH14.classes] for r in results if r.prediction]
    )
    np.testing.assert_allclose(got, direct, atol=1e-6)


def test_list_image_files(nih_paths, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.PNG").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    listing = list_image_files([tmp_path, nih_paths[0]])
    assert listing.images == [tmp_path / "a.jpg", tmp_path / "sub" / "b.PNG", nih_paths[0]]
    assert listing.summary() == "1 not image: 1 text"
    with pytest.raises(ImageLoadError, match="no such file"):
        list_image_files([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageLoadError, match="no images"):
        list_image_files([tmp_path / "empty"])


def test_list_image_files_lists_entries_that_cannot_be_read(tmp_path):
    """Each gets a row with load_image's reason instead of silently disappearing."""
    for name in ("scan.gif", "scan.webp", "scan.jp2"):
        (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "moved.png", tmp_path / "link.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "x.png").mkdir()
    found = list_image_files([tmp_path]).images
    assert [p.name for p in found] == [
        "link.png",
        "pipe.png",
        "scan.gif",
        "scan.jp2",
        "scan.webp",
        "x.png",
    ]
    reasons = []
    for path in found:
        with pytest.raises(ImageLoadError) as info:
            load_image(path)
        reasons.append(str(info.value))
    assert ["dangling" in reasons[0], "named pipe" in reasons[1], "folder" in reasons[5]] == [
        True
    ] * 3
    assert list_image_files([tmp_path / "link.png"]).images == [tmp_path / "link.png"]


def test_mismatched_checkpoints_are_refused(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="densenet121 was expected"):
        Predictor.from_checkpoint(checkpoint, expect_architecture="densenet121")
    with pytest.raises(CheckpointError, match="were expected"):
        Predictor.from_checkpoint(checkpoint, expect_classes=["Normal", "Pneumonia"])
    assert (
        Predictor.from_checkpoint(
            checkpoint, expect_architecture="small_cnn", expect_classes=NIH14.classes, warmup=False
        ).classes
        == NIH14.classes
    )


def test_corrupt_and_inconsistent_checkpoints_are_refused(checkpoint, tmp_path):
    data = bytearray(checkpoint.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    data[-100] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        Predictor.from_checkpoint(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError):
        Predictor.from_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        Predictor.from_checkpoint(tmp_path / "missing.safetensors")

    # a card naming an architecture this version does not know
    card_path = tmp_path / "unknown_arch.safetensors"
    model = create_model("small_cnn", 14, in_chans=1)
    card = ModelCard(
        architecture="resnet9000",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=PREPROCESS.to_dict(),
        in_chans=1,
    )
    save_checkpoint(card_path, model.state_dict(), card)
    with pytest.raises(CheckpointError, match="resnet9000.*available"):
        Predictor.from_checkpoint(card_path)

    # preprocessing that feeds 3 channels to a 1-channel model, or none at all: refused on load
    card = replace(card, architecture="small_cnn")
    for preprocess, message in (
        (replace(PREPROCESS, in_chans=3).to_dict(), "channel"),
        ({}, "no preprocessing"),
    ):
        write_crafted_checkpoint(
            card_path, model.state_dict(), card.to_dict() | {"preprocess": preprocess}
        )
        with pytest.raises(CheckpointError, match=message):
            Predictor.from_checkpoint(card_path)
    # written by a newer cxr_core with an incompatible format
    save_checkpoint(
        card_path,
        model.state_dict(),
        replace(card, preprocess=PREPROCESS.to_dict(), format_version=99),
    )
    with pytest.raises(CheckpointError, match="newer"):
        Predictor.from_checkpoint(card_path)


def test_a_lung_masked_model_needs_its_own_lung_model(tmp_path):
    """The card names the lung model by its weights; without those weights nothing is scored."""
    from dataclasses import replace

    from cxr_core.data.lung_mask import LungMaskConfig

    masked = replace(
        PREPROCESS,
        lung_mask=LungMaskConfig(weights_sha256="ab" * 32, checkpoint=str(tmp_path / "gone")),
    )
    torch.manual_seed(0)
    model = create_model("small_cnn", NIH14.num_classes, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=NIH14.num_classes,
        label_space=NIH14.to_dict(),
        preprocess=masked.to_dict(),
        in_chans=1,
    )
    path = save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), card)
    with pytest.raises(
        CheckpointError, match="lung-masked images made by the lung model with weights sha256 abab"
    ):
        Predictor.from_checkpoint(path, device="cpu")
    with pytest.raises(ConfigError, match="asks for lung masking but no lung masker"):
        Predictor(
            model, label_space=NIH14, preprocess=masked, target_layer=lambda m: m, device="cpu"
        )
