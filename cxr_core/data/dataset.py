"""The torch Dataset over the image cache, and the training/evaluation transforms.

Use it as::

    loader = DataLoader(CXRDataset(manifest, cache, train_transform(cfg, aug)), batch_size=64,
                        shuffle=True, num_workers=2, collate_fn=collate_batch)

Augmentation runs on batches: :class:`CXRDataset` implements ``__getitems__``, which
``torch.utils.data.DataLoader`` calls with all indices of a batch, so one gather from the
memmap and a few vectorised transform calls serve the whole batch, written straight into
the shared-memory tensor that :func:`collate_batch` passes on without copying (the default
collate also works, one copy slower). The training transform folds random rotation, random
resized crop and the optional flip into ONE affine resampling per image (``grid_sample``
with a per-image matrix) instead of a rotation at cache size followed by a crop and a resize.
torchvision.transforms.v2 applied per image on the uint8 cache measured ~2 ms/image on this
project's 2-core machine, about as slow as decoding the PNG, which threw away most of what
the cache buys (``benchmarks/bench_data_pipeline.py`` keeps that variant for comparison).
Each image still gets its own random parameters, drawn from torch's global RNG, so
``torch.manual_seed`` and DataLoader worker seeding make runs reproducible.

Evaluation uses :func:`cxr_core.data.preprocessing.eval_tensor` unchanged, the same function the
Predictor uses on uploaded files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate, get_worker_info

from cxr_core.data.cache import ImageCache
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, normalise
from cxr_core.errors import ConfigError
from cxr_core.utils.settings import check_known_keys

_SLICE = 8  # images per transform call inside a batch, see CXRDataset.__getitems__


@dataclass(frozen=True)
class AugmentConfig:
    """Random training augmentation. Horizontal flip is off by default: the heart is on the left,
    and a flipped film is a different (rare, abnormal) anatomy, not the same one."""

    rotation: float = 20.0
    crop_scale: tuple[float, float] = (0.7, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        object.__setattr__(self, "crop_ratio", tuple(float(v) for v in self.crop_ratio))
        if not 0.0 <= self.rotation <= 180.0:
            raise ConfigError(f"rotation must be between 0 and 180 degrees, not {self.rotation}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(
                f"crop_scale must be (low, high) with 0 < low <= high <= 1, not {self.crop_scale}"
            )
        rlo, rhi = self.crop_ratio
        if not 0.0 < rlo <= rhi:
            raise ConfigError(
                f"crop_ratio must be (low, high) with 0 < low <= high, not {self.crop_ratio}"
            )
        if not (0.0 <= self.brightness < 1.0 and 0.0 <= self.contrast < 1.0):
            raise ConfigError(
                f"brightness and contrast jitter must be in [0, 1), not {self.brightness} and {self.contrast}"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crop_scale"], d["crop_ratio"] = list(self.crop_scale), list(self.crop_ratio)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        check_known_keys(cls, d, "augmentation settings")
        return cls(**d)


def _as_batch(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(1, H, W) or (B, 1, H, W) uint8 -> (B, 1, H, W), and whether the input was a single image."""
    if images.dtype != torch.uint8:
        raise TypeError(f"transforms expect uint8 image tensors from the cache, got {images.dtype}")
    if images.ndim == 3 and images.shape[0] == 1:
        return images.unsqueeze(0), True
    if images.ndim == 4 and images.shape[1] == 1:
        return images, False
    raise ValueError(
        f"transforms expect (1, H, W) or (B, 1, H, W) gray images, got shape {tuple(images.shape)}"
    )


class EvalTransform:
    """Deterministic: exactly :func:`eval_tensor`, so evaluation matches the Predictor bit for bit."""

    batched = True

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.cfg = cfg

    def __call__(self, images: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        batch, single = _as_batch(images)
        result = eval_tensor(batch[:, 0], self.cfg, out=None if single else out)
        return result[0] if single else result


class TrainTransform:
    """Random rotation + random resized crop (+ optional flip, brightness/contrast) + normalise.

    Geometry matches torchvision's ``RandomRotation`` (black corners) followed by
    ``RandomResizedCrop(input_size, scale, ratio)``, resampled once with bilinear interpolation.
    """

    batched = True

    def __init__(self, cfg: PreprocessConfig, aug: AugmentConfig) -> None:
        self.cfg = cfg
        self.aug = aug
        side = cfg.input_size
        self._grid_axis = (torch.arange(side, dtype=torch.float32) * 2 + 1) / side - 1

    def __call__(self, images: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        batch, single = _as_batch(images)
        params = self.sample_params(batch.shape[0], batch.shape[2], batch.shape[3])
        result = self.apply(batch, params, out=None if single else out)
        return result[0] if single else result

    def sample_params(self, batch: int, height: int, width: int) -> dict[str, torch.Tensor]:
        """Per-image random parameters, drawn from torch's global RNG."""
        aug = self.aug
        angle = (torch.rand(batch) * 2 - 1) * math.radians(aug.rotation)
        area = torch.empty(batch).uniform_(*aug.crop_scale) * (height * width)
        log_ratio = torch.empty(batch).uniform_(
            math.log(aug.crop_ratio[0]), math.log(aug.crop_ratio[1])
        )
        crop_w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=width)
        crop_h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=height)
        # Crop centre relative to the image centre, uniform over positions that keep the crop inside.
        centre_x = (torch.rand(batch) - 0.5) * (width - crop_w)
        centre_y = (torch.rand(batch) - 0.5) * (height - crop_h)
        flip = torch.where(torch.rand(batch) < 0.5, -1.0, 1.0) if aug.hflip else torch.ones(batch)
        brightness = torch.empty(batch).uniform_(1 - aug.brightness, 1 + aug.brightness)
        contrast = torch.empty(batch).uniform_(1 - aug.contrast, 1 + aug.contrast)
        return {
            "angle": angle,
            "crop_w": crop_w,
            "crop_h": crop_h,
            "centre_x": centre_x,
            "centre_y": centre_y,
            "flip": flip,
            "brightness": brightness,
            "contrast": contrast,
        }

    def apply(
        self,
        images: torch.Tensor,
        params: dict[str, torch.Tensor],
        *,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 1, H, W) uint8 + parameters -> (B, C, S, S) normalised float32 (written to ``out`` if given)."""
        gray = F.grid_sample(
            images.to(torch.float32),
            self.sampling_grid(params, images.shape[2], images.shape[3]),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        return normalise(self.photometric(gray, params), self.cfg, out=out)

    def sampling_grid(
        self, params: dict[str, torch.Tensor], height: int, width: int
    ) -> torch.Tensor:
        """The (B, S, S, 2) ``grid_sample`` grid of the rotation + crop + flip in ``params``.

        Public so a segmentation mask can be resampled with exactly the grid of its image.
        """
        cos, sin = torch.cos(params["angle"]), torch.sin(params["angle"])
        half_w = params["flip"] * params["crop_w"] / 2
        half_h = params["crop_h"] / 2
        cx, cy = params["centre_x"], params["centre_y"]
        # Output coords (u, v) in [-1, 1] -> crop in the rotated image -> source pixel, in
        # grid_sample's normalised coordinates (align_corners=False: +-1 are the outer pixel edges).
        t = torch.stack(
            [
                cos * half_w / (width / 2),
                -sin * half_h / (width / 2),
                (cos * cx - sin * cy) / (width / 2),
                sin * half_w / (height / 2),
                cos * half_h / (height / 2),
                (sin * cx + cos * cy) / (height / 2),
            ],
            dim=1,
        ).view(-1, 6, 1, 1)
        side = self.cfg.input_size
        u = self._grid_axis.view(1, 1, side)
        v = self._grid_axis.view(1, side, 1)
        grid = torch.empty(t.shape[0], side, side, 2)
        torch.add(t[:, 0] * u, t[:, 1] * v + t[:, 2], out=grid[..., 0])
        torch.add(t[:, 3] * u, t[:, 4] * v + t[:, 5], out=grid[..., 1])
        return grid

    def photometric(self, gray: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Brightness and contrast jitter of resampled gray values (0..255)."""
        if self.aug.brightness or self.aug.contrast:
            gray = gray * params["brightness"].view(-1, 1, 1, 1)
            mean = gray.mean(dim=(2, 3), keepdim=True)
            gray = ((gray - mean) * params["contrast"].view(-1, 1, 1, 1) + mean).clamp_(0, 255)
        return gray


def train_transform(cfg: PreprocessConfig, aug: AugmentConfig) -> TrainTransform:
    """uint8 (1, H, W) or (B, 1, H, W) -> augmented, normalised (C, S, S) / (B, C, S, S)."""
    return TrainTransform(cfg, aug)


def eval_transform(cfg: PreprocessConfig) -> EvalTransform:
    """uint8 (1, H, W) or (B, 1, H, W) -> normalised (C, S, S) / (B, C, S, S); equals ``eval_tensor``."""
    return EvalTransform(cfg)


class CXRDataset(Dataset):
    """(image, target, index) for each manifest row, images read from the cache.

    ``target`` is the float32 label row with NaN for unknown (multiclass manifests give the
    one-hot row; cross-entropy takes its argmax). ``index`` is the row in ``manifest``, so
    predictions can be joined back to image ids. The manifest may be any subset (a split) of
    the one the cache was built from.

    ``transform`` maps a uint8 (1, H, W) tensor to the network input. Transforms that set
    ``batched = True`` and carry their ``cfg`` (those of :func:`train_transform` and
    :func:`eval_transform`) also take (B, 1, H, W) and an ``out=`` tensor, and are then run
    on whole batches; any other callable is applied image by image.
    """

    def __init__(
        self,
        manifest: Manifest,
        cache: ImageCache,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        cfg = getattr(transform, "cfg", None)
        if isinstance(cfg, PreprocessConfig) and cfg.cache_size != cache.size:
            raise ConfigError(
                f"the image cache holds {cache.size}px images but the preprocessing expects cache_size="
                f"{cfg.cache_size}; build the cache with size={cfg.cache_size} so training, evaluation and "
                "prediction see identically resized images"
            )
        self.cache = cache
        self.transform = transform
        self.classes = manifest.classes
        self.rows = cache.rows_for(manifest)
        self.targets = torch.from_numpy(manifest.labels())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = torch.from_numpy(self.cache[int(self.rows[i])]).unsqueeze(0)
        return self.transform(image), self.targets[i].clone(), int(i)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
        """A whole batch at once (DataLoader calls this): one memmap gather, a few transform calls.

        The images are written into ONE (B, C, S, S) tensor, allocated in shared memory inside
        a DataLoader worker, and returned as views of it; :func:`collate_batch` hands that
        tensor to the main process as is. The transform runs on slices of a few images so its
        temporaries stay small and are recycled by the allocator instead of being page-faulted
        in afresh for every batch.
        """
        cfg = getattr(self.transform, "cfg", None)
        if not (getattr(self.transform, "batched", False) and isinstance(cfg, PreprocessConfig)):
            return [self[i] for i in indices]
        index = np.asarray(indices, dtype=np.int64)
        images = torch.from_numpy(self.cache.get_batch(self.rows[index])).unsqueeze(1)
        out = _batch_tensor((len(index), cfg.in_chans, cfg.input_size, cfg.input_size))
        for start in range(0, len(index), _SLICE):
            part = slice(start, start + _SLICE)
            self.transform(images[part], out=out[part])
        return [(out[k], self.targets[i], i) for k, i in enumerate(index.tolist())]


def _batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """Uninitialised float32 tensor; in a DataLoader worker, directly in shared memory.

    Sending a batch from a worker to the main process needs shared memory; allocating it
    there from the start (the call torch's own default_collate makes) saves copying ~40 MB
    per batch, which measured as costly as the whole augmentation.
    """
    if get_worker_info() is None:
        return torch.empty(shape)
    numel = math.prod(shape)
    storage = torch.empty(0)._typed_storage()._new_shared(numel)
    return torch.empty(0).new(storage).resize_(shape)


def collate_batch(
    samples: list[tuple[torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DataLoader ``collate_fn`` for :class:`CXRDataset`: (images, targets, indices), no image copy.

    When the images are the consecutive rows of one batch tensor (what ``__getitems__``
    returns) that tensor is used as is; anything else is stacked like ``default_collate``.
    """
    images = [s[0] for s in samples]
    base = images[0]._base
    contiguous_rows = (
        base is not None
        and base.is_contiguous()
        and base.shape[0] == len(images)
        and all(
            img._base is base
            and img.shape == base.shape[1:]
            and img.data_ptr() == base[k].data_ptr()
            for k, img in enumerate(images)
        )
    )
    if not contiguous_rows:
        return tuple(default_collate(samples))
    targets, index = default_collate([(s[1], s[2]) for s in samples])
    return base, targets, index
