"""The Review page's images and heatmaps, through the prefetcher so the next film is ready before it is asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.inference.explain import explain
from cxr_core.inference.predictor import Predictor
from dashboard.prefetch import Prefetcher
from dashboard.viewer import apply_window, resize_for_view


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def image_key(path: str) -> tuple:
    return ("image", str(path), _mtime(path))


def heat_key(model_key: str, path: str, class_name: str, method: str) -> tuple:
    return ("heat", model_key, str(path), _mtime(path), class_name, method)


def _image_job(prefetcher: Prefetcher, path: str):
    def job() -> LoadedImage:
        return load_image(path)

    return job


def _heat_job(
    prefetcher: Prefetcher, predictor: Predictor, path: str, class_name: str, method: str
):
    def job() -> np.ndarray:
        image = prefetcher.peek(image_key(path)) or load_image(
            path
        )  # never wait on the queue from a job
        with prefetcher.model_lock:  # Grad-CAM hooks on a shared model must not overlap
            return explain(predictor, image, class_name, method)

    return job


def image(prefetcher: Prefetcher, path: str) -> LoadedImage:
    return prefetcher.get(image_key(path), _image_job(prefetcher, path))


def heatmap(
    prefetcher: Prefetcher,
    predictor: Predictor,
    model_key: str,
    path: str,
    class_name: str,
    method: str,
) -> np.ndarray:
    return prefetcher.get(
        heat_key(model_key, path, class_name, method),
        _heat_job(prefetcher, predictor, path, class_name, method),
    )


def prefetch(
    prefetcher: Prefetcher,
    path: str,
    predictor: Predictor | None = None,
    model_key: str = "",
    class_name: str = "",
    method: str = "none",
) -> None:
    """Queue the image (first) and, when a method is given, its heatmap."""
    prefetcher.schedule(image_key(path), _image_job(prefetcher, path))
    if predictor is not None and method != "none" and class_name:
        prefetcher.schedule(
            heat_key(model_key, path, class_name, method),
            _heat_job(prefetcher, predictor, path, class_name, method),
        )


def display(pixels: np.ndarray) -> np.ndarray:
    """The film as the viewer shows it: uint8 over its full range (0 black, 1 white), at most viewer size."""
    return resize_for_view(apply_window(pixels, 0.5, 1.0))
