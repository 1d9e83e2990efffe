"""Library inputs: bad arrays raise the project's error, a path is accepted where an image is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_core.data.imaging import load_image
from cxr_core.errors import ImageLoadError
from cxr_core.inference.predictor import Predictor
from tests.inference.test_predictor import write_checkpoint


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = write_checkpoint(tmp_path_factory.mktemp("inputs") / "model.safetensors")
    return Predictor.from_checkpoint(path, device="cpu")


@pytest.fixture(scope="module")
def nih_path(nih14_root) -> Path:
    return sorted((nih14_root / "images").glob("*.png"))[0]


def _film(value: float) -> np.ndarray:
    film = np.random.default_rng(3).random((128, 128), dtype=np.float32)
    film[40:60, 30:90] = value
    return film


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (_film(np.nan), "NaN or infinite"),
        (_film(np.inf), "NaN or infinite"),
        (np.full((256, 256), np.nan), "NaN or infinite"),
        (np.full((256, 256), -np.inf), "NaN or infinite"),
        (np.full((64, 64), 1e39), "NaN or infinite"),  # overflows float32
        (np.empty((64, 64), dtype=object), "holds object values"),
        (np.full((64, 64), "a"), "holds <U1 values"),
        (np.ones((64, 64), dtype=np.complex64), "holds complex64 values"),
        (np.ones((64, 64, 3), dtype=np.float32), r"shape \(height, width\)"),
        (None, "got NoneType"),
        (3.5, "got float"),
        (b"\x89PNG", "got bytes"),
    ],
)
def test_bad_library_inputs_raise_the_clear_error(predictor, image, message):
    with pytest.raises(ImageLoadError, match=message):
        predictor.predict([image])


@pytest.mark.parametrize("images", [None, "x.png", Path("x.png"), np.zeros((64, 64))])
def test_a_single_image_where_a_list_belongs_is_refused(predictor, images):
    with pytest.raises(ImageLoadError, match="expected a list of images"):
        predictor.predict(images)


def test_paths_are_accepted_where_images_are_expected(predictor, nih_path):
    by_path = predictor.predict([str(nih_path), nih_path])
    by_image = predictor.predict([load_image(nih_path)])
    assert [p.name for p in by_path] == [str(nih_path)] * 2
    for prediction in by_path:
        assert prediction.probabilities == pytest.approx(by_image[0].probabilities, abs=1e-6)
    assert (
        predictor.cache_array(nih_path).shape == predictor.cache_array(load_image(nih_path)).shape
    )
    with pytest.raises(ImageLoadError, match="file not found"):
        predictor.predict([nih_path.parent / "missing.png"])


def test_valid_arrays_of_every_real_dtype_are_still_scored(predictor):
    base = np.random.default_rng(5).random((96, 96))
    for image in (
        (base * 255).astype(np.uint8),
        base.astype(np.float64),
        base.astype(np.float16),
        (base > 0.5),
    ):
        (prediction,) = predictor.predict([image])
        assert all(np.isfinite(v) for v in prediction.probabilities.values())


def test_explain_accepts_a_path_like_the_image_it_names(predictor, nih_path):
    from cxr_core.inference.explain import explain

    by_path = explain(predictor, nih_path, "Mass")
    by_image = explain(predictor, load_image(nih_path), "Mass")
    assert by_path.shape == by_image.shape == load_image(nih_path).pixels.shape
    np.testing.assert_allclose(by_path, by_image, atol=1e-6)
