"""The Review page's images and heatmaps, through the prefetcher so the next film is ready before it is asked for.

What the viewer sends is prefetched too, blended and encoded (:class:`ViewImage`): on a
2,500 x 2,048 px film the heatmap blend and the PNG encoding cost ~0.4 s of a 2-core CPU, which
would otherwise be spent between the reader's save and the next film.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.inference.explain import explain, overlay
from cxr_core.inference.predictor import Predictor
from dashboard.prefetch import Prefetcher
from dashboard.viewer import ViewImage, apply_window, resize_for_view


@dataclass(frozen=True)
class HeatRequest:
    """Which heatmap to blend over a film, and how strongly."""

    predictor: Predictor
    model_key: str
    class_name: str
    method: str
    opacity: float = 0.4


def _mtime(path: str) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def image_key(path: str) -> tuple:
    return ("image", str(path), _mtime(path))


def heat_key(path: str, heat: HeatRequest) -> tuple:
    return ("heat", heat.model_key, str(path), _mtime(path), heat.class_name, heat.method)


def shown_key(path: str, heat: HeatRequest | None) -> tuple:
    if heat is None:
        return ("shown", str(path), _mtime(path))
    return ("shown", *heat_key(path, heat), heat.opacity)


def _image_job(prefetcher: Prefetcher, path: str):
    def job() -> LoadedImage:
        return load_image(path)

    return job


def _heat_job(prefetcher: Prefetcher, path: str, heat: HeatRequest):
    def job() -> np.ndarray:
        image = prefetcher.peek(image_key(path)) or load_image(
            path
        )  # never wait on the queue from a job
        with prefetcher.model_lock:  # Grad-CAM hooks on a shared model must not overlap
            return explain(heat.predictor, image, heat.class_name, heat.method)

    return job


def _shown_job(prefetcher: Prefetcher, path: str, heat: HeatRequest | None):
    def job() -> ViewImage:
        pixels = (prefetcher.peek(image_key(path)) or load_image(path)).pixels
        gray = display(pixels)
        if heat is None:
            return ViewImage.of(gray)
        cam = prefetcher.peek(heat_key(path, heat))
        if cam is None:
            cam = _heat_job(prefetcher, path, heat)()
        # blended at view size: the same picture as blending the full film, at 2/3 of the pixels
        return ViewImage.of(overlay(gray.astype(np.float32) / 255.0, cam, heat.opacity))

    return job


def image(prefetcher: Prefetcher, path: str) -> LoadedImage:
    return prefetcher.get(image_key(path), _image_job(prefetcher, path))


def heatmap(prefetcher: Prefetcher, path: str, heat: HeatRequest) -> np.ndarray:
    return prefetcher.get(heat_key(path, heat), _heat_job(prefetcher, path, heat))


def shown(prefetcher: Prefetcher, path: str, heat: HeatRequest | None = None) -> ViewImage:
    """The film as the viewer shows it, with ``heat`` blended in when given, encoded for the browser."""
    return prefetcher.get(shown_key(path, heat), _shown_job(prefetcher, path, heat))


def prefetch(prefetcher: Prefetcher, path: str, heat: HeatRequest | None = None) -> None:
    """Queue the image (first), its heatmap when ``heat`` asks for one, then what the viewer sends."""
    prefetcher.schedule(image_key(path), _image_job(prefetcher, path))
    if heat is not None:
        prefetcher.schedule(heat_key(path, heat), _heat_job(prefetcher, path, heat))
    prefetcher.schedule(shown_key(path, heat), _shown_job(prefetcher, path, heat))


def display(pixels: np.ndarray) -> np.ndarray:
    """The film as the viewer shows it: uint8 over its full range (0 black, 1 white), at most viewer size."""
    return resize_for_view(apply_window(pixels, 0.5, 1.0))
