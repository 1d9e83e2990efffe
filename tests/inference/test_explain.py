"""Heatmaps: shape, location on a model built to respond to a planted region, overlays, threads."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import ConfigError, UnknownClassError
from cxr_core.inference.burned_in import burned_in_text_mask
from cxr_core.inference.explain import (
    DEFAULT_BORDER,
    METHODS,
    ClassLogitTarget,
    contour_overlay,
    estimate_seconds,
    explain,
    explain_batch,
    interactive_methods,
    mask_border,
    overlay,
    overlay_png,
)
from cxr_core.inference.predictor import Predictor

# Square in the original image: rows 20..39, cols 60..84 of a 80x100 image.
SQUARE = (slice(20, 40), slice(60, 85))


class BrightDarkNet(nn.Module):
    """Class "Bright" = mean response of bright-pixel detectors, "Dark" = of dark-pixel detectors.

    Input is normalised with mean 0.5, std 0.25: bright (0.95) -> 1.8, background (0.2) -> -1.2.
    The head bias makes "Bright" confidently negative (logit < 0) so the test also shows the
    raw-logit target explains absent findings without flipping sign.
    """

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv2d(1, 8, 3, padding=1)
        with torch.no_grad():
            gains = torch.tensor([1.0, 2.0, 3.0, 4.0])
            conv.weight.zero_()
            conv.weight[:4] = (gains / 9.0).view(4, 1, 1, 1)  # bright detectors
            conv.weight[4:] = -(gains / 9.0).view(4, 1, 1, 1)  # dark detectors
            conv.bias.copy_(torch.cat([-gains * 0.5, -gains * 0.5]))
        self.features = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(4))
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, :4] = 1.0
            self.head.weight[1, 4:] = 1.0
            self.head.bias.copy_(torch.tensor([-10.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(
        BrightDarkNet(),
        label_space=LabelSpace("planted", ("Bright", "Dark")),
        preprocess=PreprocessConfig(
            cache_size=64, input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3, in_chans=1
        ),
        target_layer=lambda m: m.features[2],
        device="cpu",
    )


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.clip(0.2 + 0.03 * rng.standard_normal((80, 100)), 0, 1).astype(np.float32)
    img[SQUARE] = 0.95
    return img


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(np.argmax(heatmap), heatmap.shape))


def _in_square(point: tuple[int, int]) -> bool:
    return (
        SQUARE[0].start <= point[0] < SQUARE[0].stop
        and SQUARE[1].start <= point[1] < SQUARE[1].stop
    )


@pytest.mark.parametrize("method", sorted(METHODS))
def test_heatmap_peaks_inside_planted_square(predictor, image, method):
    assert predictor.predict([image])[0].probabilities["Bright"] < 0.01  # logit < 0: absent
    heat = explain(predictor, image, "Bright", method=method)
    assert heat.shape == image.shape and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0 and heat.max() > 0.5
    assert _in_square(_peak(heat)), f"{method} peak {_peak(heat)} outside the square"
    mask = np.zeros(image.shape, bool)
    mask[SQUARE] = True
    assert heat[mask].mean() > 3 * heat[~mask].mean()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_class_specific_methods_explain_the_requested_class(predictor, image, method):
    heat = explain(predictor, image, "Dark", method=method)
    mask = np.zeros(image.shape, bool)
    mask[SQUARE] = True
    assert not _in_square(_peak(heat))
    assert heat[~mask].mean() > 3 * heat[mask].mean()


@pytest.mark.parametrize("arch", ["small_cnn", "densenet121"])
def test_gradcam_equals_the_library_reference_on_registered_models(arch):
    """The graph cut at the target layer and the frozen copy change cost, not the map.

    Both models apply an in-place ReLU to the target layer's output.
    """
    from pytorch_grad_cam import GradCAM

    from cxr_core.data.labels import NIH14
    from cxr_core.models import create_model, get_model_spec

    torch.manual_seed(0)
    spec = get_model_spec(arch)
    model = create_model(arch, 14)
    pred = Predictor(
        model,
        label_space=NIH14,
        preprocess=PreprocessConfig(cache_size=64, input_size=64),
        target_layer=spec.target_layer,
        device="cpu",
    )
    img = np.random.default_rng(5).random((64, 64)).astype(np.float32)
    ours = explain(pred, img, "Mass", border=0.0)
    reference = create_model(arch, 14)
    reference.load_state_dict(model.state_dict())
    with GradCAM(model=reference.eval(), target_layers=[spec.target_layer(reference)]) as cam:
        expected = cam(
            input_tensor=pred.prepare([img]), targets=[ClassLogitTarget(NIH14.index("Mass"))]
        )[0]
    assert expected.max() > 0.5
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_logit_target_reads_the_raw_logit():
    out = torch.tensor([[-3.0, 2.0], [1.5, -0.5]])
    assert torch.equal(ClassLogitTarget(0)(out), torch.tensor([-3.0, 1.5]))
    assert ClassLogitTarget(1)(out[0]).item() == 2.0


def test_eigencam_orients_the_component_towards_the_salient_region():
    """Plain SVD projection sometimes highlights the background; the corrected one does not."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from cxr_core.inference.explain import SignCorrectedEigenCAM

    def peak_inside(cam: np.ndarray) -> bool:
        row, col = np.unravel_index(np.argmax(cam), cam.shape)
        return 1 <= row < 3 and 4 <= col < 6

    plain_misses = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        acts = np.abs(rng.standard_normal((1, 16, 7, 7))).astype(np.float32) * 0.3
        acts[0, :, 1:3, 4:6] += (
            rng.random(16)[:, None, None].astype(np.float32) * 3
        )  # post-ReLU-like, one hot spot
        corrected = SignCorrectedEigenCAM.get_cam_image(None, None, None, None, acts, None, False)[
            0
        ]
        assert peak_inside(corrected), f"seed {seed}"
        plain_misses += not peak_inside(get_2d_projection(acts)[0])
    assert plain_misses > 0


def test_batch_matches_single_calls_and_uses_one_class_per_image(predictor, image):
    flipped = np.ascontiguousarray(image[::-1])
    maps = explain_batch(
        predictor, [image, flipped, image], ["Bright", "Bright", "Dark"], "gradcam"
    )
    assert np.allclose(maps[0], explain(predictor, image, "Bright"), atol=1e-5)
    assert np.allclose(maps[1], explain(predictor, flipped, "Bright"), atol=1e-5)
    assert np.allclose(maps[2], explain(predictor, image, "Dark"), atol=1e-5)


def test_hooks_are_released_after_each_call(predictor, image):
    explain(predictor, image, "Bright")
    with predictor.explanation_model() as model:
        assert all(not m._forward_hooks for m in model.modules())
    assert all(not m._forward_hooks for m in predictor.model.modules())


def test_bad_class_and_method_are_refused(predictor, image):
    with pytest.raises(UnknownClassError, match="Bright, Dark"):
        explain(predictor, image, "Pneumothorax")
    with pytest.raises(ConfigError, match="gradcam\\+\\+"):
        explain(predictor, image, "Bright", method="saliency")


def test_concurrent_explanations_match_sequential(predictor, image):
    rng = np.random.default_rng(1)
    images = [
        np.clip(image + 0.05 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)
        for _ in range(4)
    ]
    expected = [explain(predictor, im, "Bright") for im in images]
    expected_probs = predictor.predict(images)
    results: dict[int, tuple] = {}

    def work(i: int) -> None:
        for _ in range(3):
            heat = explain(predictor, images[i], "Bright")
            probs = predictor.predict([images[i]])[0]
        results[i] = (heat, probs)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert np.allclose(results[i][0], expected[i], atol=1e-6)
        # a batch of one vs the batch of four: the kernels may differ in the last bits
        assert results[i][1].probabilities == pytest.approx(
            expected_probs[i].probabilities, rel=1e-5, abs=1e-6
        )


def test_overlay_blends_colormap_over_gray():
    gray = np.linspace(0, 1, 30 * 40, dtype=np.float32).reshape(30, 40)
    heat = np.zeros((30, 40), np.float32)
    heat[10:20, 10:20] = 1.0
    rgb = overlay(gray, heat, opacity=0.0)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], np.round(gray * 255).astype(np.uint8))
    full = overlay(gray, heat, opacity=1.0, colormap="jet")
    assert tuple(full[15, 15]) == (128, 0, 0)  # jet at 1.0 is dark red
    assert tuple(full[0, 0]) == (0, 0, 128)  # jet at 0.0 is dark blue
    # a half-size heatmap is resized to the image
    assert overlay(gray, heat[::2, ::2]).shape == (30, 40, 3)
    with pytest.raises(ConfigError):
        overlay(gray, heat, colormap="no-such-map")


def test_overlay_png_round_trips():
    gray = np.random.default_rng(2).random((24, 32)).astype(np.float32)
    heat = np.random.default_rng(3).random((24, 32)).astype(np.float32)
    decoded = np.asarray(Image.open(io.BytesIO(overlay_png(gray, heat))))
    assert np.array_equal(decoded, overlay(gray, heat))


def test_mask_border_zeroes_the_frame_and_rescales_the_inside():
    heat = np.zeros((50, 40), dtype=np.float32)
    heat[0, :] = 1.0  # a peak on the top edge, as on a collimator edge
    heat[20:30, 15:25] = 0.3
    masked = mask_border(heat, 0.1)
    assert masked[:5].max() == 0.0 and masked[:, :4].max() == 0.0 and masked[-5:].max() == 0.0
    assert masked[25, 20] == pytest.approx(1.0)  # the inner region now sets the scale
    assert _peak(masked) == (20, 15)
    assert mask_border(heat, 0.0) is heat
    with pytest.raises(ConfigError, match="border"):
        mask_border(heat, 0.5)


def test_mask_border_leaves_excluded_pixels_out_of_the_scale():
    heat = np.zeros((50, 40), dtype=np.float32)
    heat[10:13, 10:20] = 1.0  # a peak on burned-in text, inside the frame
    heat[30:40, 15:25] = 0.4
    heat[35, 20] = 0.5
    text = np.zeros(heat.shape, bool)
    text[10:13, 10:20] = True
    masked = mask_border(heat, 0.1, text)
    assert masked[text].max() == 0.0 and masked[:5].max() == 0.0
    assert _peak(masked) == (35, 20) and masked[35, 20] == pytest.approx(1.0)
    assert masked[31, 16] == pytest.approx(0.8)  # 0.4 of a 0..0.5 range
    assert mask_border(heat, 0.1)[35, 20] == pytest.approx(
        0.5
    )  # without it the text sets the scale
    no_frame = mask_border(heat, 0.0, text)
    assert no_frame[text].max() == 0.0 and no_frame[35, 20] == pytest.approx(1.0)
    assert mask_border(heat, 0.0, np.zeros(heat.shape, bool)) is heat
    with pytest.raises(ValueError, match="shape"):
        mask_border(heat, 0.1, text[:10])


def test_burned_in_text_is_left_out_of_the_map_by_default():
    """The "Bright" class also lights up on bright text; the default map ignores it, mask_text=False keeps it."""
    predictor = Predictor(  # at full resolution, so the network sees the characters
        BrightDarkNet(),
        label_space=LabelSpace("planted", ("Bright", "Dark")),
        preprocess=PreprocessConfig(
            cache_size=256, input_size=256, mean=(0.5,) * 3, std=(0.25,) * 3, in_chans=1
        ),
        target_layer=lambda m: m.features[2],
        device="cpu",
    )
    rng = np.random.default_rng(2)
    film = np.clip(0.2 + 0.03 * rng.standard_normal((256, 256)), 0, 1)
    film[100:160, 110:170] = 0.9
    ink = Image.fromarray(np.zeros(film.shape, np.uint8))
    ImageDraw.Draw(ink).text(
        (30, 30),
        "AP",
        fill=255,
        font=ImageFont.load_default(size=14),
        stroke_width=1,
        stroke_fill=255,
    )
    marked = np.maximum(film, 0.97 * (np.asarray(ink) / 255.0)).astype(np.float32)
    text = burned_in_text_mask(marked)
    assert text[np.asarray(ink) > 127].all() and not text[100:160, 110:170].any()

    plain = explain(predictor, marked, "Bright", mask_text=False)
    default = explain(predictor, marked, "Bright")
    assert plain[text].max() > 0.3 and default[text].max() == 0.0
    raw = explain(predictor, marked, "Bright", border=0.0, mask_text=False)
    np.testing.assert_allclose(default, mask_border(raw, DEFAULT_BORDER, text), atol=1e-6)
    np.testing.assert_allclose(plain, mask_border(raw, DEFAULT_BORDER), atol=1e-6)


def test_named_layer_is_read_and_a_wrong_name_is_explained(predictor, image):
    default = explain(predictor, image, "Bright", border=0.0)
    named = explain(predictor, image, "Bright", layer="features.2", border=0.0)
    np.testing.assert_allclose(named, default, atol=1e-6)  # features.2 is the registered layer
    conv = explain(predictor, image, "Bright", layer="features.1", border=0.0)
    assert conv.shape == default.shape
    with pytest.raises(ConfigError, match="features"):
        explain(predictor, image, "Bright", layer="features.9")


def test_contour_overlay_outlines_the_region_and_keeps_the_film_elsewhere(image):
    heat = np.zeros(image.shape, dtype=np.float32)
    heat[SQUARE] = 1.0
    out = contour_overlay(image, heat, level=0.5, colour=(255, 0, 0), thickness=1)
    gray = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    drawn = np.any(out != gray[..., None], axis=2)
    rows, cols = np.nonzero(drawn)
    assert (
        19 <= rows.min() <= 20
        and 39 <= rows.max() <= 40
        and 59 <= cols.min() <= 60
        and 84 <= cols.max() <= 85
    )
    assert not drawn[23:37, 63:82].any()  # the outline only: inside is not filled
    np.testing.assert_array_equal(
        out[:10, :50, 1], gray[:10, :50]
    )  # untouched film away from the line
    assert contour_overlay(image, heat, max_side=40).shape == (32, 40, 3)
    with pytest.raises(ConfigError, match="level"):
        contour_overlay(image, heat, level=1.0)


def test_score_cam_is_estimated_by_channels_and_withheld_when_slow(predictor):
    assert estimate_seconds(predictor, "gradcam", 0.1) == pytest.approx(0.2)
    assert estimate_seconds(predictor, "scorecam", 0.1) == pytest.approx(
        0.8
    )  # 8 channels at the target layer
    offered = interactive_methods(predictor, forward_s=0.01)
    assert offered["scorecam"] == "" and offered["gradcam"] == ""
    slow = interactive_methods(predictor, forward_s=2.0)
    assert "above" in slow["scorecam"] and slow["gradcam"] == ""  # one pass per channel: 16 s

    from cxr_core.models.ensemble import Ensemble

    ensemble = Predictor(
        Ensemble([BrightDarkNet()], [predictor.preprocess.input_size]),
        label_space=predictor.label_space,
        preprocess=predictor.preprocess,
        target_layer=lambda m: m.members[0].features[2],
        device="cpu",
    )
    assert "ensembles" in interactive_methods(ensemble, forward_s=0.001)["scorecam"]
