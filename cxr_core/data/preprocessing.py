"""The single resize/normalise path from decoded pixels to network input.

Two halves, used by everything that feeds a model:

1. :func:`to_cache_array` turns a decoded radiograph (float32 in [0, 1], any size) into the
   square uint8 array the image cache stores.
2. :func:`eval_tensor` turns such uint8 arrays into the normalised tensor the network sees.

Training and ``cxr evaluate`` read the cache (half 1 at build time, half 2 per batch); the
Predictor runs both halves on an uploaded file (:func:`prepare_image`). Because there is only
this one path, a probability shown for an uploaded file equals the one ``cxr evaluate``
computes for the same file. A model trained with lung masking (``PreprocessConfig.lung_mask``)
has one more step between the halves, on the cache array: everything outside the lungs is
blacked out (:mod:`cxr_core.data.lung_mask`), in the cache and in the Predictor alike.

Resizing for the cache: Pillow ``BILINEAR`` on a 32-bit float ("F" mode) image. Pillow scales
its filter support by the reduction factor, so shrinking a 3000-px detector image to 256 px is
properly antialiased (no moiré from grids or ribs), and working in float keeps the full depth of
12/16-bit DICOMs until the single rounding to uint8 at the end. LANCZOS was rejected because
its negative lobes ring around the sharp edges radiographs are full of (collimation borders,
wires, pacemaker leads) and would have to be clipped. Non-square images are resized to the
square directly (not cropped), so nothing near the film edge, such as a costophrenic angle,
is ever cut away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxr_core.data.lung_mask import LungMaskConfig
from cxr_core.errors import ConfigError, ImageLoadError
from cxr_core.utils.settings import check_known_keys

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become network input; stored in every model card so inference matches training.

    ``in_chans=3`` replicates the gray image into three channels, each normalised with its own
    ImageNet mean/std (what ImageNet-pretrained weights expect); ``in_chans=1`` keeps one
    channel normalised with the first mean/std. ``lung_mask`` (None: off) blacks out everything
    outside the lungs of the cache array before the network sees it.
    """

    cache_size: int = 256
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    in_chans: int = 3
    lung_mask: LungMaskConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not (isinstance(self.cache_size, int) and isinstance(self.input_size, int)):
            raise ConfigError(
                f"cache_size and input_size must be whole pixel counts, got {self.cache_size!r}, {self.input_size!r}"
            )
        if self.cache_size < 8 or self.input_size < 8:
            raise ConfigError(
                f"cache_size ({self.cache_size}) and input_size ({self.input_size}) must be at least 8 pixels"
            )
        if self.in_chans not in (1, 3):
            raise ConfigError(
                f"in_chans must be 1 (gray) or 3 (gray replicated), not {self.in_chans!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError(
                f"mean and std need three values each (one per RGB channel), got {self.mean} and {self.std}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std values must be positive, got {self.std}")
        if self.lung_mask is not None and not isinstance(self.lung_mask, LungMaskConfig):
            raise ConfigError(
                f"lung_mask must be lung mask settings or None, not {self.lung_mask!r}"
            )

    def to_dict(self) -> dict:
        """JSON-ready settings; ``lung_mask`` appears only when it is on, so cards of unmasked
        models read exactly as they did before lung masking existed."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.lung_mask is None:
            del d["lung_mask"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        check_known_keys(cls, d, "preprocessing settings")
        values = dict(d)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        if values.get("lung_mask") is not None:
            values["lung_mask"] = LungMaskConfig.from_dict(values["lung_mask"])
        return cls(**values)


def range_mean_std(
    low: float, high: float
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The ``mean``/``std`` that map gray [0, 1] linearly onto [``low``, ``high``].

    Models trained elsewhere often want a value range rather than ImageNet statistics:
    torchxrayvision's expect [-1024, 1024] (``xrv.datasets.normalize``), which is
    ``(g - 0.5) / (1 / 2048)``, so a :class:`PreprocessConfig` holds it as it is.
    """
    if not high > low:
        raise ConfigError(f"an input range needs low < high, got [{low}, {high}]")
    mean, std = -low / (high - low), 1.0 / (high - low)
    return (mean, mean, mean), (std, std, std)


def to_cache_array(pixels: np.ndarray, size: int) -> np.ndarray:
    """Decoded radiograph (H, W) float in [0, 1] -> uint8 (size, size), antialiased.

    An 8-bit image already at ``size`` comes back with exactly its original values.
    """
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.size == 0:
        raise ImageLoadError(
            f"expected a 2-D grayscale pixel array, got shape {arr.shape}; load images with "
            "cxr_core.data.imaging.load_image"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageLoadError(
            f"expected float pixels in [0, 1], got {arr.dtype}; load images with cxr_core.data.imaging.load_image"
        )
    arr = np.ascontiguousarray(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0), dtype=np.float32)
    if arr.shape != (size, size):
        resized = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(resized, dtype=np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def normalise(
    gray255: torch.Tensor, cfg: PreprocessConfig, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """(B, 1, S, S) float gray in 0..255 -> (B, C, S, S) normalised, in one fused pass.

    Shared by :func:`eval_tensor` and the training transform so both normalise identically;
    ``out`` lets the training transform write slices of a preallocated batch.
    """
    chans = cfg.in_chans
    std = torch.tensor(cfg.std[:chans], dtype=torch.float32)
    mean = torch.tensor(cfg.mean[:chans], dtype=torch.float32)
    scale = (1.0 / (255.0 * std)).view(1, chans, 1, 1)
    shift = (-mean / std).view(1, chans, 1, 1)
    if out is None:
        return torch.addcmul(shift, gray255, scale)
    return torch.addcmul(shift, gray255, scale, out=out)


def eval_tensor(
    images_uint8: np.ndarray | torch.Tensor,
    cfg: PreprocessConfig,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cache arrays -> network input: (H, W) -> (C, S, S) or (B, H, W) -> (B, C, S, S).

    Resizes to ``cfg.input_size`` with antialiased bilinear interpolation (skipped when the
    array is already that size), scales to [0, 1], replicates gray to ``cfg.in_chans`` and
    normalises. Each image's result does not depend on the rest of its batch. ``out`` (batch
    input only) receives the result, e.g. a slice of a batch in shared memory.
    """
    if isinstance(images_uint8, np.ndarray):
        if images_uint8.dtype != np.uint8:
            raise ImageLoadError(
                f"eval_tensor expects uint8 cache arrays, got {images_uint8.dtype}; pass pixels "
                "through to_cache_array first"
            )
        x = torch.from_numpy(images_uint8.astype(np.float32))
    elif isinstance(images_uint8, torch.Tensor):
        if images_uint8.dtype != torch.uint8:
            raise ImageLoadError(
                f"eval_tensor expects uint8 cache arrays, got {images_uint8.dtype}; pass pixels "
                "through to_cache_array first"
            )
        x = images_uint8.to(torch.float32)
    else:
        raise TypeError(
            f"eval_tensor expects a numpy array or torch tensor, got {type(images_uint8).__name__}"
        )
    single = x.ndim == 2
    if single:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ImageLoadError(
            f"eval_tensor expects (H, W) or (B, H, W) arrays, got shape {tuple(x.shape)}"
        )
    x = x.unsqueeze(1)
    side = cfg.input_size
    if tuple(x.shape[-2:]) != (side, side):
        x = F.interpolate(
            x, size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )
    if out is not None and single:
        raise ValueError("eval_tensor(out=...) needs a (B, H, W) batch")
    result = normalise(x, cfg, out=out)
    return result[0] if single else result


def prepare_image(pixels: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """Decoded radiograph -> (C, S, S) network input, exactly as the cache + evaluation path would.

    Refuses lung-masked preprocessing: finding the lungs takes the lung network, which only the
    Predictor (and the image cache) run.
    """
    if cfg.lung_mask is not None:
        raise ConfigError(
            "this model sees lung-masked images, which needs the lung segmentation model; "
            "score images with cxr_core.inference.predictor.Predictor instead of prepare_image"
        )
    return eval_tensor(to_cache_array(pixels, cfg.cache_size), cfg)
