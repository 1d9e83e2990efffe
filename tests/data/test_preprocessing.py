"""The single resize/normalise path: cache arrays and network input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_core.data.imaging import load_image
from cxr_core.data.preprocessing import (
    PreprocessConfig,
    eval_tensor,
    prepare_image,
    to_cache_array,
)
from cxr_core.errors import ConfigError, ImageLoadError

MEAN = np.array(PreprocessConfig().mean, dtype=np.float32)
STD = np.array(PreprocessConfig().std, dtype=np.float32)


def test_eight_bit_image_at_cache_size_round_trips_exactly(nih14_root):
    path = sorted((nih14_root / "images").glob("*.png"))[0]
    original = np.asarray(Image.open(path).convert("L"))
    cached = to_cache_array(load_image(path).pixels, original.shape[0])
    assert cached.dtype == np.uint8
    np.testing.assert_array_equal(cached, original)


def test_downsizing_is_antialiased():
    # 1-px stripes: sampling without a low-pass filter would keep stripes or pick one colour.
    stripes = np.tile(np.array([0.0, 1.0], dtype=np.float32), (512, 256))
    small = to_cache_array(stripes, 64)
    assert small.shape == (64, 64)
    inner = small[:, 1:-1].astype(int)  # the outermost columns see a truncated filter
    assert np.abs(inner - 128).max() <= 1
    assert np.abs(small.astype(int) - 128).max() <= 6


def test_float_precision_is_kept_until_the_single_rounding():
    # A smooth 12-bit style ramp: resizing must not quantise to 8 bits first (which would shift values).
    ramp = np.tile(np.linspace(0.0, 1.0, 1000, dtype=np.float32), (800, 1))
    small = to_cache_array(ramp, 100)
    expected = np.rint(np.linspace(0.0, 1.0, 1000)[5::10] * 255)
    assert small.shape == (100, 100)
    assert np.abs(small[50, 1:-1].astype(int) - expected[1:-1]).max() <= 1
    assert (
        small == small[0]
    ).all()  # every row equal: no vertical artefacts from the non-square input


def test_constant_and_out_of_range_pixels():
    assert (to_cache_array(np.full((30, 50), 0.5, np.float32), 16) == 128).all()
    clipped = to_cache_array(np.array([[-1.0, 2.0], [np.nan, 0.0]], np.float32), 2)
    np.testing.assert_array_equal(clipped, [[0, 255], [0, 0]])


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), np.float32), np.zeros((0, 5), np.float32), np.zeros((8, 8), np.uint8)],
)
def test_to_cache_array_refuses_non_gray_float_input(bad):
    with pytest.raises(ImageLoadError):
        to_cache_array(bad, 8)


def test_eval_tensor_normalises_each_channel():
    gray = np.full((256, 256), 200, np.uint8)
    out = eval_tensor(gray, PreprocessConfig())
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    expected = (200 / 255 - MEAN) / STD
    for c in range(3):
        np.testing.assert_allclose(out[c].numpy(), expected[c], rtol=0, atol=1e-5)
    one = eval_tensor(gray, PreprocessConfig(in_chans=1, input_size=256))
    assert one.shape == (1, 256, 256)
    np.testing.assert_allclose(one.numpy(), expected[0], atol=1e-5)


def test_eval_tensor_batch_equals_single_images_bit_for_bit():
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(4, 96, 96), dtype=np.uint8)
    cfg = PreprocessConfig(cache_size=96, input_size=64)
    stacked = eval_tensor(batch, cfg)
    assert stacked.shape == (4, 3, 64, 64)
    for i in range(4):
        assert torch.equal(stacked[i], eval_tensor(batch[i], cfg))
        assert torch.equal(stacked[i], eval_tensor(torch.from_numpy(batch[i]), cfg))


def test_eval_tensor_resize_is_antialiased_and_size_preserving_when_equal():
    checker = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    cfg = PreprocessConfig(in_chans=1, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_size=100)
    out = eval_tensor(checker, cfg)[0]
    assert abs(float(out.mean()) - 0.5) < 0.01 and float(out.std()) < 0.1
    same = eval_tensor(
        checker, PreprocessConfig(in_chans=1, mean=(0.0,) * 3, std=(1.0,) * 3, input_size=256)
    )[0]
    np.testing.assert_allclose(same.numpy(), checker / 255.0, atol=1e-6)


def test_eval_tensor_refuses_wrong_input():
    with pytest.raises(ImageLoadError):
        eval_tensor(np.zeros((8, 8), np.float32), PreprocessConfig())
    with pytest.raises(ImageLoadError):
        eval_tensor(np.zeros((1, 2, 8, 8), np.uint8), PreprocessConfig())


def test_prepare_image_on_a_known_ramp():
    ramp = np.tile(np.linspace(0.0, 1.0, 600, dtype=np.float32), (500, 1))
    cfg = PreprocessConfig()
    out = prepare_image(ramp, cfg)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out, eval_tensor(to_cache_array(ramp, cfg.cache_size), cfg))
    # Channel c spans (0 - m_c)/s_c .. (1 - m_c)/s_c and averages (0.5 - m_c)/s_c.
    for c in range(3):
        ch = out[c].numpy()
        assert ch.min() == pytest.approx(-MEAN[c] / STD[c], abs=0.02)
        assert ch.max() == pytest.approx((1 - MEAN[c]) / STD[c], abs=0.02)
        assert ch.mean() == pytest.approx((0.5 - MEAN[c]) / STD[c], abs=0.01)


def test_prepare_image_on_a_real_radiograph(nih14_root):
    path = sorted((nih14_root / "images").glob("*.png"))[1]
    cfg = PreprocessConfig()
    out = prepare_image(load_image(path).pixels, cfg)
    raw = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255
    # The antialiased resize keeps the image's mean brightness.
    assert float(out[0].mean()) * STD[0] + MEAN[0] == pytest.approx(raw.mean(), abs=0.005)
    assert torch.isfinite(out).all()


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(cache_size=320, input_size=288, in_chans=1)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown preprocessing settings"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "colour": True})
    with pytest.raises(ConfigError, match="in_chans"):
        PreprocessConfig(in_chans=2)
    with pytest.raises(ConfigError, match="std"):
        PreprocessConfig(std=(0.2, 0.0, 0.2))
