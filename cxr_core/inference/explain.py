"""Class activation maps (the Grad-CAM family) and overlays for a :class:`Predictor`.

Wraps pytorch-grad-cam. Two choices differ from its defaults, on purpose:

- The target of a class is its raw logit. ``ClassifierOutputSoftmaxTarget`` would mix in the
  other classes of a multilabel model, and ``BinaryClassifierOutputTarget`` flips the sign of
  negative logits, so a confidently *absent* finding would be explained as if present.
- The CAM object is released in ``finally`` by :func:`_cam_session` rather than by the CAM's
  own ``__exit__``, which in 1.5.7 prints and swallows any ``IndexError`` raised inside the
  ``with`` block; hooks are removed after every call either way.

Maps are computed at network input size and resized back to the image's own resolution, so
they can be laid over the radiograph the user sees. ``eigencam`` is class-agnostic (the first
principal component of the activations, sign-corrected, see :class:`SignCorrectedEigenCAM`);
the other methods explain the requested class.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import cv2
import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.svd_on_activations import (
    get_2d_projection_with_sign_correction,
)
from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.inference.burned_in import burned_in_text_mask
from cxr_core.inference.predictor import ImageInput, Predictor, image_list, image_pixels
from cxr_core.models.ensemble import Ensemble

Heatmap = np.ndarray
"""float32 (H, W) in [0, 1] at the resolution of the explained image."""

DEFAULT_BORDER = 0.08
"""Fraction of each image side left out of a heatmap's normalisation (see :func:`mask_border`).

Radiographs carry collimator edges, burned-in labels and markers along their borders, and maps
read from finer layers often peak there. On the NIH boxes (README, "Heatmaps") masking it lifted
Grad-CAM at ``features.5`` from 0.12 to 0.17 pointing hits and changed nothing for the default
method and layer, whose maps already peak inside the chest.
"""
DEFAULT_MASK_TEXT = True
"""Whether burned-in text and markers (:func:`~cxr_core.inference.burned_in.burned_in_text_mask`)
are left out of a heatmap's normalisation too, for the same reason as the border (README, "Heatmaps")."""


class SignCorrectedEigenCAM(EigenCAM):
    """EigenCAM with the principal component oriented so its larger extreme is positive.

    SVD leaves the component's sign arbitrary; with the library's plain projection the ReLU
    that follows zeroes the salient region whenever the sign comes out negative, and the map
    highlights the background instead. Orientation follows Seg-Eigen-CAM (Chung & Ying 2025, eq. 13).
    """

    def get_cam_image(
        self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth
    ):
        return get_2d_projection_with_sign_correction(activations)


METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": SignCorrectedEigenCAM,
    "scorecam": ScoreCAM,
}

# Score-CAM runs one forward pass per activation channel; batching them bounds memory.
_SCORECAM_BATCH = 32
DEFAULT_METHOD = "gradcam++"
DEFAULT_LAYER: str | None = None
"""The method and layer the dashboard opens with (None: the architecture's registered layer, the
last feature block). Chosen on the 780 NIH boxes (README, "Heatmaps"): Grad-CAM++ there hits
0.253 of the boxes against 0.214 for a pointer fixed at the image centre, with the highest mean
IoU of the methods and layers tried (0.161)."""
LOCALISATION_NOTE = (
    "Where the model drew its evidence, not an outline of the finding. On 780 NIH radiologist boxes the default "
    "map's peak fell inside the box 25% of the time (a pointer fixed at the image centre: 21%), mean overlap "
    "(IoU) 0.16; Nodule 0%, Atelectasis 4%. Use it to question the model, not to locate disease."
)
CLASS_AGNOSTIC = frozenset({"eigencam"})
"""Methods whose map does not depend on the class asked for."""
SLOW_SECONDS = 10.0
"""An interactive view offers Score-CAM only when its estimated time stays below this."""


class ClassLogitTarget:
    """Grad-CAM target: the raw logit of one class (see the module docstring for why)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return model_output[..., self.index]


def method_class(method: str) -> type[BaseCAM]:
    try:
        return METHODS[method.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown explanation method '{method}'; choose one of: {', '.join(METHODS)}"
        ) from None


@contextmanager
def _cam_session(
    cam_class: type[BaseCAM], model: nn.Module, layers: list[nn.Module]
) -> Iterator[BaseCAM]:
    cam = cam_class(model=model, target_layers=layers)
    if cam_class is ScoreCAM:
        cam.batch_size = _SCORECAM_BATCH
    try:
        yield cam
    finally:
        cam.activations_and_grads.release()


@contextmanager
def _graph_starts_at(layers: list[nn.Module]) -> Iterator[None]:
    """Make the target layers' outputs the start of the autograd graph.

    Grad-CAM needs gradients only from the logits back to this layer. With frozen weights and
    this cut, nothing before the layer records a graph and backward stops here, so an
    explanation costs about one forward pass instead of a forward plus a full backward.
    The clone keeps the returned tensor a non-leaf, because models such as DenseNet apply an
    in-place ReLU to it. Registered before the CAM's own hooks, which then see this tensor.
    """

    def cut(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.detach().requires_grad_(True).clone()

    handles = [layer.register_forward_hook(cut) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def explain_batch(
    predictor: Predictor,
    images: Sequence[ImageInput],
    class_names: Sequence[str],
    method: str = "gradcam",
    *,
    layer: str | None = None,
    border: float = DEFAULT_BORDER,
    mask_text: bool = DEFAULT_MASK_TEXT,
) -> list[Heatmap]:
    """One heatmap per (image, class name) pair, each at its image's resolution.

    ``layer`` names the module to read (a dotted path inside the model, or inside each member
    of an ensemble, e.g. ``features.5``); None uses the architecture's registered layer.
    ``border`` is passed to :func:`mask_border` (0 keeps the plain map); ``mask_text`` also
    leaves the image's burned-in text and markers out of the normalisation.
    Unknown class → ``UnknownClassError``; unknown method or layer → ``ConfigError``.
    Runs on the predictor's explanation copy of the model, one call at a time.
    """
    if len(images) != len(class_names):
        raise ValueError(
            f"explain_batch needs one class per image: {len(images)} images, {len(class_names)} classes"
        )
    if not images:
        return []
    images = image_list(images)  # paths read once
    cam_class = method_class(method)
    indices = [predictor.label_space.index(name) for name in class_names]
    pixels = [image_pixels(im, i)[0] for i, im in enumerate(images)]
    batch = predictor.prepare(images)
    with predictor.explanation_model() as model, torch.enable_grad():
        layers = resolve_layers(predictor, model, layer)
        with _graph_starts_at(layers), _cam_session(cam_class, model, layers) as cam:
            maps = cam(input_tensor=batch, targets=[ClassLogitTarget(i) for i in indices])
    text: dict[
        int, np.ndarray
    ] = {}  # one detection per image, however many of its classes are explained
    if mask_text:
        for image, gray in zip(images, pixels):
            if id(image) not in text:
                text[id(image)] = burned_in_text_mask(gray)
    return [
        mask_border(_to_shape(m, gray.shape), border, text.get(id(image)))
        for m, gray, image in zip(maps, pixels, images)
    ]


def explain(
    predictor: Predictor,
    image: ImageInput,
    class_name: str,
    method: str = "gradcam",
    *,
    layer: str | None = None,
    border: float = DEFAULT_BORDER,
    mask_text: bool = DEFAULT_MASK_TEXT,
) -> Heatmap:
    """Heatmap of where ``class_name`` draws its evidence in ``image`` (float32, image resolution, [0, 1])."""
    return explain_batch(
        predictor, [image], [class_name], method, layer=layer, border=border, mask_text=mask_text
    )[0]


def resolve_layers(predictor: Predictor, model: nn.Module, layer: str | None) -> list[nn.Module]:
    """The modules a CAM reads: the registered layer(s), or ``layer`` looked up in the model or
    in every ensemble member (whose maps pytorch-grad-cam then averages)."""
    if layer is None:
        return predictor.target_layers(model)
    roots = list(model.members) if isinstance(model, Ensemble) else [model]
    try:
        return [root.get_submodule(layer) for root in roots]
    except AttributeError:
        names = [name for name, _ in roots[0].named_children()]
        raise ConfigError(
            f"layer '{layer}' is not in this model; give a dotted module path such as "
            f"'{names[0] if names else 'features'}.3' (top-level modules: {', '.join(names)})"
        ) from None


def mask_border(
    heatmap: Heatmap, fraction: float = DEFAULT_BORDER, exclude: np.ndarray | None = None
) -> Heatmap:
    """Zero the outer ``fraction`` of each side and the ``exclude`` pixels; rescale the rest to [0, 1].

    So a peak on a collimator edge or a burned-in label cannot set the scale (or the pointing
    game's maximum) of the map inside the chest. ``exclude`` is a boolean mask of the heatmap's
    shape (burned-in text, :func:`~cxr_core.inference.burned_in.burned_in_text_mask`).
    ``fraction`` 0 without ``exclude`` returns the map unchanged.
    """
    if not 0.0 <= fraction < 0.5:
        raise ConfigError(
            f"the masked border must be a fraction of the image side in [0, 0.5), not {fraction}"
        )
    if exclude is not None and exclude.shape != heatmap.shape:
        raise ValueError(
            f"the excluded region has shape {exclude.shape}, the heatmap {heatmap.shape}"
        )
    if fraction == 0.0 and (exclude is None or not exclude.any()):
        return heatmap
    height, width = heatmap.shape
    dy, dx = int(round(height * fraction)), int(round(width * fraction))
    kept = np.zeros(heatmap.shape, dtype=bool)
    kept[dy : height - dy, dx : width - dx] = True
    if exclude is not None:
        kept &= ~exclude
    out = np.zeros_like(heatmap, dtype=np.float32)
    if kept.any():
        inside = heatmap[kept]
        low, high = float(inside.min()), float(inside.max())
        if high > low:
            out[kept] = (inside - low) / (high - low)
    return out


def _to_shape(cam: np.ndarray, shape: tuple[int, int]) -> Heatmap:
    """Back from network input size to the image's own (H, W), values kept in [0, 1]."""
    cam = np.nan_to_num(cam.astype(np.float32), nan=0.0)
    height, width = shape
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(cam, 0.0, 1.0).astype(np.float32)


def overlay(
    gray: np.ndarray, heatmap: Heatmap, opacity: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """Heatmap coloured with ``colormap`` blended over the radiograph: uint8 (H, W, 3) RGB.

    A heatmap of a different size (e.g. from a downscaled copy) is resized to the image.
    """
    import matplotlib

    if gray.ndim != 2 or heatmap.ndim != 2:
        raise ValueError(
            f"overlay needs two 2-D arrays, got shapes {gray.shape} and {heatmap.shape}"
        )
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"overlay opacity must lie between 0 and 1, not {opacity}")
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ConfigError(
            f"unknown colormap '{colormap}'; try jet, inferno, viridis or turbo"
        ) from None
    heat = _to_shape(heatmap, gray.shape)
    base = np.clip(gray.astype(np.float32), 0.0, 1.0)[..., None]
    colour = cmap(heat)[..., :3].astype(np.float32)
    blended = (1.0 - opacity) * base + opacity * colour
    return np.round(blended * 255.0).astype(np.uint8)


def overlay_png(
    gray: np.ndarray, heatmap: Heatmap, opacity: float = 0.4, colormap: str = "jet"
) -> bytes:
    """:func:`overlay` encoded as PNG bytes (for download buttons and ``cxr predict --heatmaps``)."""
    buffer = io.BytesIO()
    Image.fromarray(overlay(gray, heatmap, opacity, colormap)).save(buffer, format="PNG")
    return buffer.getvalue()


def forward_seconds(predictor: Predictor, repeats: int = 3) -> float:
    """Median wall time of one forward pass of one image (the unit of :func:`estimate_seconds`)."""
    size = predictor.preprocess.input_size
    batch = torch.zeros(1, predictor.preprocess.in_chans, size, size, device=predictor.device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            predictor.model(batch)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def _channels(predictor: Predictor, layers: list[nn.Module]) -> int:
    """Total output channels of the target layers, seen in one forward pass of a blank image."""
    seen: list[int] = []
    handles = [
        layer.register_forward_hook(lambda m, i, out: seen.append(int(out.shape[1])))
        for layer in layers
    ]
    size = predictor.preprocess.input_size
    try:
        with torch.inference_mode():
            predictor.model(
                torch.zeros(1, predictor.preprocess.in_chans, size, size, device=predictor.device)
            )
    finally:
        for handle in handles:
            handle.remove()
    return max(sum(seen), 1)


def estimate_seconds(
    predictor: Predictor, method: str, forward_s: float, layer: str | None = None
) -> float:
    """Rough time of one explanation: Score-CAM runs one forward pass per channel of the target
    layer(s); the gradient methods and EigenCAM about two passes (forward plus a short backward)."""
    method_class(method)
    if method.lower() != "scorecam":
        return 2.0 * forward_s
    return forward_s * _channels(predictor, resolve_layers(predictor, predictor.model, layer))


def interactive_methods(predictor: Predictor, forward_s: float) -> dict[str, str]:
    """Method -> "" when it may run interactively, else the reason it is left out.

    Left out: Score-CAM when estimated above ``SLOW_SECONDS``, and always on ensembles (one
    pass per channel of every member: minutes on a CPU, with no way to cancel a running call).
    The other methods cost about two forward passes and are always offered: on a loaded CPU
    they are slow too, but leaving them out would leave no explanation at all.
    """
    out = {}
    ensemble = isinstance(predictor.model, Ensemble)
    channels = _channels(predictor, predictor.target_layers(predictor.model))
    for method in METHODS:
        estimate = (
            forward_s * channels
            if method == "scorecam"
            else estimate_seconds(predictor, method, forward_s)
        )
        if method == "scorecam" and ensemble:
            out[method] = f"not offered for ensembles (estimated {estimate:.0f} s)"
        elif method == "scorecam" and estimate > SLOW_SECONDS:
            out[method] = f"estimated {estimate:.0f} s, above {SLOW_SECONDS:.0f} s"
        else:
            out[method] = ""
    return out


def contour_overlay(
    gray: np.ndarray,
    heatmap: Heatmap,
    level: float = 0.5,
    colour: tuple[int, int, int] = (255, 64, 0),
    thickness: int = 2,
    max_side: int | None = None,
) -> np.ndarray:
    """The radiograph with the outline of {heatmap ≥ level} drawn on it: uint8 (H, W, 3) RGB.

    Unlike a colour wash, the film stays readable everywhere outside the thin line.
    ``max_side`` downsamples first (small multiples).
    """
    if gray.ndim != 2 or heatmap.ndim != 2:
        raise ValueError(
            f"contour_overlay needs two 2-D arrays, got shapes {gray.shape} and {heatmap.shape}"
        )
    if not 0.0 < level < 1.0:
        raise ConfigError(f"the contour level must lie strictly between 0 and 1, not {level}")
    base = np.clip(gray.astype(np.float32), 0.0, 1.0)
    if max_side and max(base.shape) > max_side:
        scale = max_side / max(base.shape)
        base = cv2.resize(
            base,
            (max(1, round(base.shape[1] * scale)), max(1, round(base.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    heat = _to_shape(heatmap, base.shape)
    rgb = np.repeat(np.round(base * 255.0).astype(np.uint8)[..., None], 3, axis=2)
    contours, _ = cv2.findContours(
        (heat >= level).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(rgb, contours, -1, colour, thickness, lineType=cv2.LINE_AA)
    return rgb
