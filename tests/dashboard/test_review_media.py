"""What the Review viewer sends is prepared ahead: the film (or film + heatmap) blended, sized and
encoded once, by the prefetcher, so the page only picks it up when the reader moves on."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_core.data.imaging import load_image
from cxr_core.inference.explain import explain, overlay
from cxr_core.inference.predictor import Predictor
from dashboard import review_media
from dashboard.prefetch import Prefetcher
from dashboard.viewer import MAX_VIEW_SIDE

PNEUMONIA = Path(__file__).resolve().parents[2] / "checkpoints" / "pneumonia" / "model.safetensors"


def _decoded(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


@pytest.fixture(scope="module")
def film(tmp_path_factory, nih14_root) -> Path:
    """A real NIH film at a detector's size and depth: 2,500 x 2,048 px, 16-bit."""
    source = sorted((nih14_root / "images").glob("*.png"))[0]
    gray = np.asarray(Image.open(source).convert("L"), dtype=np.float32)
    big = np.asarray(Image.fromarray(gray).resize((2048, 2500), Image.Resampling.BICUBIC))
    path = tmp_path_factory.mktemp("films") / "big.png"
    Image.fromarray(np.clip(big * 257, 0, 65535).astype(np.uint16)).save(path)
    return path


def test_the_prefetched_film_is_the_display_copy_encoded_once(film):
    prefetcher = Prefetcher()
    review_media.prefetch(prefetcher, str(film))
    prefetcher.get("after", lambda: None)  # one worker, in order: the prefetch jobs ran before
    assert prefetcher.ready(review_media.shown_key(str(film), None))
    shown = review_media.shown(prefetcher, str(film))
    assert review_media.shown(prefetcher, str(film)) is shown
    expected = review_media.display(load_image(film).pixels)
    assert shown.shape == expected.shape == (MAX_VIEW_SIDE, round(2048 * MAX_VIEW_SIDE / 2500))
    assert np.array_equal(_decoded(shown.uri), expected)  # lossless, full 8-bit display range


def test_a_heatmap_request_blends_the_models_map_at_view_size(film):
    predictor = Predictor.from_checkpoint(PNEUMONIA, device="cpu", tta="none", warmup=False)
    heat = review_media.HeatRequest(predictor, "pneumonia", "Pneumonia", "gradcam", 0.5)
    prefetcher = Prefetcher()
    review_media.prefetch(prefetcher, str(film), heat)
    prefetcher.get("after", lambda: None)
    assert prefetcher.ready(review_media.shown_key(str(film), heat))
    shown = review_media.shown(prefetcher, str(film), heat)
    loaded = load_image(film)
    cam = explain(predictor, loaded, "Pneumonia", "gradcam")
    gray = review_media.display(loaded.pixels)
    expected = overlay(gray.astype(np.float32) / 255.0, cam, 0.5)
    got = _decoded(shown.uri)
    assert got.shape == (*gray.shape, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # Grad-CAM to float noise
    # another opacity is another picture; the film and its map are not recomputed for it
    fainter = review_media.HeatRequest(predictor, "pneumonia", "Pneumonia", "gradcam", 0.2)
    assert review_media.shown_key(str(film), fainter) != review_media.shown_key(str(film), heat)
    assert not np.array_equal(_decoded(review_media.shown(prefetcher, str(film), fainter).uri), got)
