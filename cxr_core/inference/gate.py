"""The input gate: refuse what cannot be a radiograph, warn about what the model never learned from.

A classifier scores anything it is given: a blank frame got 13 of 14 NIH findings positive,
noise likewise, and the pediatric pneumonia model called an adult film "Pneumonia (0.89)".
The gate sits in front of every prediction (the Predictor, hence ``cxr predict`` and the
dashboard) and works at three levels:

1. **Refusal** (:func:`check_quality`, an :class:`UnsuitableImageError` in that image's row):
   constant or near-constant images, images too small to hold anatomy, absurd aspect ratios.
2. **Image warnings** (:meth:`InputGate.image_warnings`): from the header
   (:meth:`InputGate.metadata_warnings`), a DICOM whose Modality or BodyPartExamined is not a
   chest radiograph, a lateral view (every bundled model learned from frontal films), a patient
   age outside the ages the model was trained on; and, when the gate has a lung model
   (:class:`~cxr_core.inference.lungs.LungSegmenter`: ``cxr predict --lungs``, the dashboard),
   lung area outside the range seen in training (none, tiny, or most of the image) or a mask
   that is not two lungs side by side: "does not look like a frontal chest radiograph".
3. **Distribution warnings**: the Mahalanobis distance of the image's pooled penultimate
   features (the input of each classifier head; an ensemble's members concatenated) from the
   training images, under a low-rank-plus-isotropic covariance (probabilistic PCA: the top
   ``dims`` principal directions with their own variances, the rest one shared variance),
   which keeps the statistics small (mean + ``dims`` directions) and the inverse well
   conditioned with fewer images than feature dimensions. The threshold is the
   :data:`VALIDATION_QUANTILE` quantile of validation-image distances, so about 5% of
   in-distribution images are flagged. The statistics are stamped into the checkpoint by
   :func:`fit_gate` (``cxr gate fit``) without touching the weights.

Warnings do not suppress findings: the clinician sees the numbers and why not to trust them.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.data.cache import ImageCache
from cxr_core.data.imaging import LoadedImage
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import eval_tensor
from cxr_core.errors import CheckpointError, ConfigError, UnsuitableImageError
from cxr_core.inference.lungs import LungResult, LungSegmenter
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import head_modules, load_checkpoint, stamp_checkpoint
from cxr_core.utils.device import resolve_device

logger = logging.getLogger(__name__)

MIN_SIDE = 32  # pixels; a 1x1 or 1x100000 "image" holds no anatomy at any zoom
MAX_ASPECT = 4.0  # longest/shortest side; chest films are about 1:1.2, long-leg films reach 1:3
MIN_SPREAD = 0.05  # 1st-99th percentile range of pixels in [0, 1]; radiographs span > 0.5
CHEST_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})  # computed / digital / radiographic imaging
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"})
VALIDATION_QUANTILE = 0.95
GATE_VERSION = 1
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}


def check_quality(pixels: np.ndarray, name: str, meta: dict[str, Any] | None = None) -> None:
    """Refuse an image that cannot be a radiograph, with a message saying what is wrong."""
    if pixels.ndim != 2:
        raise UnsuitableImageError(
            f"{name}: expected a 2-D gray image, got an array of shape {pixels.shape}."
        )
    height, width = pixels.shape
    if min(height, width) < MIN_SIDE:
        raise UnsuitableImageError(
            f"{name}: the image is {width}x{height} pixels, too small to be a radiograph "
            f"(at least {MIN_SIDE} px per side). Upload the full-resolution export."
        )
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise UnsuitableImageError(
            f"{name}: the image is {width}x{height} pixels, an aspect ratio of "
            f"{max(height, width) / min(height, width):.0f}:1; a chest radiograph is roughly square. "
            "Check that this is the right file."
        )
    if meta and meta.get("constant"):
        raise UnsuitableImageError(
            f"{name}: the image is blank (every pixel has the same value); nothing to assess."
        )
    step = max(1, max(height, width) // 512)  # percentiles on a subsample: fast on 3000-px films
    low, high = np.percentile(pixels[::step, ::step], [1, 99])
    if high - low < MIN_SPREAD:
        raise UnsuitableImageError(
            f"{name}: the image is nearly uniform (98% of pixels within {high - low:.3f} of each other on a 0-1 "
            "scale); it is blank, over- or under-exposed, or not a radiograph."
        )


def dicom_age_years(value: Any) -> float | None:
    """A DICOM Age String ("045Y", "006M", "010W", "003D") in years; None when absent or unreadable."""
    if value is None:
        return None
    match = _AGE.match(str(value))
    if not match:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def training_age_range(ages: Sequence[float] | np.ndarray) -> list[float] | None:
    """[youngest, oldest] training age in years, or None when the data carry no ages."""
    values = np.asarray(ages, dtype=np.float64)
    values = values[np.isfinite(values)]
    return [float(values.min()), float(values.max())] if values.size else None


# --------------------------------------------------------------------------- features


class FeatureTap:
    """Pooled penultimate features of a model's forward passes, collected per thread.

    Forward pre-hooks on the classifier heads see each head's input. The hooks stay registered
    on the shared model; each thread collects only while inside :meth:`run`, so concurrent
    predictions never see each other's features (a copy of the model made for Grad-CAM
    carries the hooks along but never collects).
    """

    def __init__(self, heads: Sequence[nn.Module]) -> None:
        self._local = threading.local()
        self._count = len(heads)
        for head in heads:
            head.register_forward_pre_hook(self._hook)

    def __deepcopy__(self, memo: dict) -> FeatureTap:
        # A deep copy of the model (the Grad-CAM replica) copies its hooks and with them this
        # tap; thread-local state cannot be copied, and sharing the tap is safe: a thread only
        # collects inside run(), which the replica is never called from.
        return self

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        buffer = getattr(self._local, "buffer", None)
        if buffer is not None:
            buffer.append(inputs[0].detach().float().flatten(1))

    def run(self, forward: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, np.ndarray]:
        """``forward()``'s result and the (B, F) features of its first pass through the model
        (test-time augmentation passes again over the mirrored image; those are ignored)."""
        self._local.buffer = []
        try:
            result = forward()
            captured = self._local.buffer[: self._count]
        finally:
            self._local.buffer = None
        if len(captured) != self._count:
            raise RuntimeError(
                f"expected features from {self._count} classifier heads, got {len(captured)}"
            )
        return result, torch.cat(captured, dim=1).cpu().numpy().astype(np.float64)


@dataclass(frozen=True)
class FeatureReference:
    """Training-feature statistics: mean, the top principal directions with their variances,
    and one variance for everything else."""

    mean: np.ndarray  # (F,)
    components: np.ndarray  # (F, k), orthonormal columns
    variances: np.ndarray  # (k,)
    residual_variance: float
    threshold: float  # distances above this are flagged

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each (N, F) feature row, normalised by sqrt(F) so that a
        typical training image sits near 1 whatever the feature width."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        projected = centred @ self.components
        residual = centred - projected @ self.components.T
        squared = (projected**2 / self.variances).sum(axis=1) + (residual**2).sum(
            axis=1
        ) / self.residual_variance
        return np.sqrt(squared / self.mean.size)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "components": torch.from_numpy(self.components.astype(np.float32)),
            "variances": torch.from_numpy(self.variances.astype(np.float32)),
        }

    @classmethod
    def from_checkpoint(cls, tensors: dict[str, torch.Tensor], section: dict) -> FeatureReference:
        try:
            mean, comps, variances = (
                tensors[k].double().numpy() for k in ("mean", "components", "variances")
            )
            residual, threshold = (
                float(section["residual_variance"]),
                float(section["distance_threshold"]),
            )
        except KeyError as exc:
            raise CheckpointError(
                f"the input-gate statistics lack {exc}; re-run `cxr gate fit`"
            ) from None
        if (
            comps.shape != (mean.size, variances.size)
            or not (variances > 0).all()
            or not residual > 0
            or not np.isfinite(threshold)
            or threshold <= 0
        ):
            raise CheckpointError(
                "the input-gate statistics are inconsistent; re-run `cxr gate fit`"
            )
        return cls(mean, comps, variances, residual, threshold)


def fit_reference(
    train: np.ndarray,
    validation: np.ndarray,
    *,
    dims: int = 64,
    quantile: float = VALIDATION_QUANTILE,
) -> tuple[FeatureReference, np.ndarray]:
    """Statistics of ``train`` features, thresholded at ``quantile`` of ``validation`` distances.

    Returns the reference and the validation distances. The top ``dims`` directions come from
    an SVD of the centred training features; the residual variance is the mean variance of
    the remaining directions, which is the maximum-likelihood isotropic part of the covariance.
    """
    train = np.asarray(train, dtype=np.float64)
    if train.shape[0] < 2 or validation.shape[0] < 1:
        raise ConfigError(
            f"fitting the input gate needs >= 2 training and >= 1 validation images, got "
            f"{train.shape[0]} and {validation.shape[0]}"
        )
    mean = train.mean(axis=0)
    _, singular, vt = np.linalg.svd(train - mean, full_matrices=False)
    eig = singular**2 / (train.shape[0] - 1)
    k = int(min(dims, (eig > eig[0] * 1e-9).sum()))
    total = float(((train - mean) ** 2).sum() / (train.shape[0] - 1))
    rest = max(total - float(eig[:k].sum()), 0.0) / max(train.shape[1] - k, 1)
    residual = max(rest, float(eig[k - 1]) * 1e-3, 1e-12)  # floor: the residual may vanish (N << F)
    unthresholded = FeatureReference(mean, vt[:k].T.copy(), eig[:k].copy(), residual, np.inf)
    val_distances = unthresholded.distances(validation)
    threshold = float(
        np.quantile(val_distances, quantile, method="higher")
    )  # at most 5% strictly above
    return FeatureReference(
        mean, vt[:k].T.copy(), eig[:k].copy(), residual, threshold
    ), val_distances


# --------------------------------------------------------------------------- the gate


class InputGate:
    """What a Predictor checks about each image, built from one model card (and its statistics)."""

    def __init__(
        self,
        card: ModelCard | None = None,
        reference: FeatureReference | None = None,
        lungs: LungSegmenter | None = None,
    ) -> None:
        """``lungs``: the lung model whose input check joins the image warnings (None: no lung check)."""
        # New cards record the training ages in their data section; older ones (the bundled
        # models) get them from `cxr gate fit`, which reads them off the training manifest.
        age = (
            (card.data.get("age_range") or card.gate.get("age_range")) if card is not None else None
        )
        try:
            self.age_range: tuple[float, float] | None = (
                (float(age[0]), float(age[1])) if age else None
            )
        except (TypeError, ValueError, IndexError, KeyError):
            raise CheckpointError(
                f"the model card's training age range {age!r} is not [youngest, oldest]"
            ) from None
        self.reference = reference
        self.lungs = lungs

    @classmethod
    def of_checkpoint(
        cls, card: ModelCard, tensors: dict[str, torch.Tensor], lungs: LungSegmenter | None = None
    ) -> InputGate:
        """The gate a checkpoint's card and stored statistics describe (metadata checks only when unfitted)."""
        if not card.gate or not tensors:
            return cls(card, None, lungs)
        return cls(card, FeatureReference.from_checkpoint(tensors, card.gate), lungs)

    def segment_lungs(self, pixels: np.ndarray) -> LungResult | None:
        """The lung mask and input check of one decoded image (float (H, W) in [0, 1]); None without a lung model.

        Separate from :meth:`image_warnings` so a caller that also shows or saves the mask
        (the dashboard, ``cxr predict --lungs``) segments each image once.
        """
        return self.lungs.segment(pixels) if self.lungs is not None else None

    def image_warnings(
        self, image: LoadedImage | np.ndarray, lungs: LungResult | None = None
    ) -> list[str]:
        """Warnings about one image itself: its header, then its lungs (``lungs`` from :meth:`segment_lungs`)."""
        warning = lungs.check.warning if lungs is not None else None
        return self.metadata_warnings(image) + ([warning] if warning else [])

    def metadata_warnings(self, image: LoadedImage | np.ndarray) -> list[str]:
        """Warnings from what the file says about itself (DICOM headers)."""
        meta = image.meta if isinstance(image, LoadedImage) else {}
        if meta.get("format") != "DICOM":
            return []
        out = []
        modality = str(meta.get("modality") or "").strip().upper()
        if modality and modality not in CHEST_MODALITIES:
            out.append(
                f"DICOM Modality is {modality}, not a radiograph (CR/DX): this model only reads chest X-rays."
            )
        body_part = str(meta.get("body_part") or "").strip().upper()
        if body_part and body_part not in CHEST_BODY_PARTS:
            out.append(
                f"DICOM BodyPartExamined is {body_part}, not CHEST: this model only reads chest X-rays."
            )
        view = str(meta.get("view_position") or "").strip().upper()
        if view in LATERAL_VIEWS:
            out.append(
                f"lateral view ({view}): the model was trained on frontal (PA/AP) films only."
            )
        age = dicom_age_years(meta.get("patient_age"))
        if (
            age is not None
            and self.age_range is not None
            and not self.age_range[0] <= age <= self.age_range[1]
        ):
            out.append(
                f"patient age {age:g} years is outside the training ages "
                f"({self.age_range[0]:g}-{self.age_range[1]:g} years)."
            )
        return out

    def distribution_warnings(self, features: np.ndarray) -> list[list[str]]:
        """Per image, a warning when its features lie beyond the validation threshold."""
        if self.reference is None:
            return [[] for _ in range(len(features))]
        distances = self.reference.distances(features)
        return [
            [
                f"unlike the training images (feature distance {d / self.reference.threshold:.1f}x the "
                "threshold 95% of validation images stay under): it may not be a chest radiograph of the "
                "kind this model learned from; do not rely on its findings."
            ]
            if d > self.reference.threshold
            else []
            for d in distances
        ]


def fit_gate(
    card: ModelCard,
    model: nn.Module,
    heads: Sequence[nn.Module],
    batches: Callable[[str], Iterator[torch.Tensor]],
    *,
    ages: Sequence[float] | np.ndarray = (),
    dims: int = 64,
) -> tuple[ModelCard, dict[str, torch.Tensor], np.ndarray]:
    """A card with a fitted ``gate`` section, its tensors and the validation distances.

    ``batches(split)`` yields prepared input batches of the "train" and "val" images.
    Features are taken without test-time augmentation (the first forward pass).
    """
    tap = FeatureTap(heads)
    features = {}
    model.eval()
    for split in ("train", "val"):
        chunks = []
        for batch in batches(split):
            with torch.inference_mode():
                _, feats = tap.run(lambda b=batch: model(b))
            chunks.append(feats)
        features[split] = np.concatenate(chunks)
    reference, val_distances = fit_reference(features["train"], features["val"], dims=dims)
    section = {
        "version": GATE_VERSION,
        "features": "pooled penultimate features (input of each classifier head; ensemble members concatenated)",
        "dims": int(reference.components.shape[1]),
        "feature_size": int(reference.mean.size),
        "n_train": int(len(features["train"])),
        "n_val": int(len(features["val"])),
        "residual_variance": reference.residual_variance,
        "distance_threshold": reference.threshold,
        "validation_quantile": VALIDATION_QUANTILE,
        "val_flagged_fraction": float((val_distances > reference.threshold).mean()),
        "age_range": training_age_range(ages),
    }
    return replace(card, gate=section), reference.to_tensors(), val_distances


def fit_checkpoint_gate(
    checkpoint: str | Path,
    manifest: Manifest,
    cache_dir: str | Path,
    *,
    dims: int = 64,
    max_train: int = 2000,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Fit the input gate of a checkpoint on its training/validation images and stamp it in.

    The reference statistics come from (at most ``max_train``, a seeded sample of) the training
    split, the threshold from the whole validation split. The weights and every other card
    field stay as they are. Returns the new ``gate`` section.
    """
    ckpt = load_checkpoint(checkpoint)
    preprocess = ckpt.preprocess
    cache = ImageCache.build(
        manifest,
        cache_dir,
        preprocess.cache_size,
        progress=progress,
        transform=lung_masker_for(preprocess, device),
    )  # the images the model saw
    dev = resolve_device(device)
    model = ckpt.build_model().to(dev)
    train = manifest.split("train")
    if len(train) > max_train:
        train = train.with_frame(train.frame.sample(n=max_train, random_state=seed).sort_index())
    splits = {"train": train, "val": manifest.split("val")}

    def batches(split: str) -> Iterator[torch.Tensor]:
        rows = cache.rows_for(splits[split])
        for start in range(0, len(rows), batch_size):
            yield eval_tensor(cache.get_batch(rows[start : start + batch_size]), preprocess).to(dev)

    ages = train.frame["age"].to_numpy(dtype=np.float64) if "age" in train.frame else np.array([])
    card, tensors, _ = fit_gate(
        ckpt.card, model, head_modules(ckpt.card, model), batches, ages=ages, dims=dims
    )
    stamp_checkpoint(checkpoint, card, tensors)
    logger.info(
        "input gate of %s: threshold %.3f, %.1f%% of %d validation images flagged",
        checkpoint,
        card.gate["distance_threshold"],
        100 * card.gate["val_flagged_fraction"],
        card.gate["n_val"],
    )
    return card.gate
