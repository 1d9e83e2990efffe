"""Fitting a checkpoint's input gate (``cxr gate fit``): both detectors, their thresholds, their rates.

* **domain** (out of domain above its threshold): fitted on (a seeded sample of) the model's
  training images, thresholded at the :data:`DOMAIN_QUANTILE` quantile of its validation
  images' scores, so about 2% of films like the training ones are held back.
* **chest** (refused above its threshold): fitted on the training images plus *reference*
  chest radiographs of other populations (``--reference`` folders: a child's films for an
  adult model and the other way round, other hospitals), so that any real chest film stays
  within it; thresholded :data:`CHEST_MARGIN` above the highest score of a validation film
  (the model's validation images and a held-out half of each reference folder). Without
  references it knows only the training population, and a film of another population may be
  refused instead of flagged.

Training images go through the checkpoint's image cache, exactly as evaluation reads them;
reference images through the Predictor's path (``load_image``, ``to_cache_array``, the lung
masker of a lung-masked model). The stamped card records the detector, its layers, thresholds
and the measured rates: validation films flagged and refused, and per reference folder the
share flagged as out of domain and refused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.data.cache import ImageCache
from cxr_core.data.formats.files import list_image_files
from cxr_core.data.imaging import load_image
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, to_cache_array
from cxr_core.errors import ConfigError, CXRError
from cxr_core.inference.domain import (
    DEFAULT_DIMS,
    Detector,
    LayerTap,
    feature_layers,
    fit_detector,
    member_heads,
)
from cxr_core.inference.gate import GATE_VERSION, header_refusal, training_age_range
from cxr_core.inference.gate import check_quality as _check_quality
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import load_checkpoint, stamp_checkpoint
from cxr_core.utils.device import resolve_device

logger = logging.getLogger(__name__)

DOMAIN_QUANTILE = 0.98
CHEST_MARGIN = 1.0  # in validation standard deviations of the layers' log-distances
MAX_REFERENCE = 600  # images sampled per reference folder (half fit, half threshold)
DETECTOR = "multi-layer feature Mahalanobis distance (Lee et al. 2018), one Gaussian per layer"
FEATURES = "per layer: channel-wise spatial mean and standard deviation of each block's output"

Features = list[np.ndarray]  # one (N, F_l) array per layer


@dataclass(frozen=True)
class ReferenceImages:
    """A seeded sample of one folder of chest films: half fits the chest detector, half sets its threshold."""

    folder: Path
    fit: tuple[Path, ...]
    val: tuple[Path, ...]

    @property
    def used(self) -> frozenset[Path]:
        return frozenset(self.fit) | frozenset(self.val)


def reference_images(
    folder: str | Path, *, limit: int = MAX_REFERENCE, seed: int = 0
) -> ReferenceImages:
    """The images ``cxr gate fit`` takes from a reference folder (the benchmark leaves them out)."""
    paths = list_image_files([folder]).images
    order = np.random.default_rng(seed).permutation(len(paths))[:limit]
    half = len(order) // 2
    return ReferenceImages(
        Path(folder),
        tuple(paths[i] for i in sorted(order[:half])),
        tuple(paths[i] for i in sorted(order[half:])),
    )


def collect_features(
    model: nn.Module, layers: Sequence[nn.Module], batches: Iterable[torch.Tensor]
) -> Features:
    """The layer features of every batch, without test-time augmentation."""
    tap = LayerTap(layers)
    model.eval()
    chunks: list[Features] = []
    for batch in batches:
        with torch.inference_mode():
            chunks.append(tap.run(lambda b=batch: model(b))[1])
    if not chunks:
        raise ConfigError("no images to fit the input gate on")
    return [np.concatenate(parts) for parts in zip(*chunks)]


def _join(*sets: Features) -> Features:
    return [np.concatenate(parts) for parts in zip(*sets)]


def _rates(domain: Detector, chest: Detector, features: Features) -> dict[str, float]:
    refused = chest.flagged(features)
    flagged = domain.flagged(features) & ~refused
    return {
        "images": int(len(refused)),
        "refused": float(refused.mean()),
        "out_of_domain": float(flagged.mean()),
    }


def fit_detectors(
    train: Features,
    val: Features,
    references: dict[str, tuple[Features, Features]],
    *,
    heads: Sequence[int] = (),
    dims: int = DEFAULT_DIMS,
) -> tuple[Detector, Detector, dict]:
    """The domain and chest detectors (see the module docstring) and the rates they measure.

    The chest detector leaves out ``heads``, each member's last layer: it describes findings,
    not whether the image is a radiograph, and only blurred the refusal score.
    """
    domain, val_scores = fit_detector(train, val, dims=dims)
    domain = domain.with_threshold(np.quantile(val_scores, DOMAIN_QUANTILE, method="higher"))
    fits = [fit for fit, _ in references.values()]
    vals = [held for _, held in references.values()]
    body = [i for i in range(len(train)) if i not in set(heads)] or None
    chest, chest_scores = fit_detector(
        _join(train, *fits), _join(val, *vals), dims=dims, index=body
    )
    chest = chest.with_threshold(float(chest_scores.max()) + CHEST_MARGIN)
    rates = {
        "validation": _rates(domain, chest, val),
        "references": {name: _rates(domain, chest, held) for name, (_, held) in references.items()},
    }
    return domain, chest, rates


def gate_section(
    layer_names: Sequence[str],
    domain: Detector,
    chest: Detector,
    rates: dict,
    *,
    counts: dict[str, int],
    ages: Sequence[float] | np.ndarray = (),
    dims: int = DEFAULT_DIMS,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The card's ``gate`` section and its tensors."""
    section = {
        "version": GATE_VERSION,
        "detector": DETECTOR,
        "features": FEATURES,
        "layers": list(layer_names),
        "dims": int(dims),
        "domain": domain.to_section()
        | {"rule": f"{DOMAIN_QUANTILE} quantile of the validation images' scores"},
        "chest": chest.to_section()
        | {"rule": f"highest validation score (model and references) + {CHEST_MARGIN}"},
        "counts": dict(counts),
        "rates": rates,
        "age_range": training_age_range(ages),
    }
    return section, domain.to_tensors("domain") | chest.to_tensors("chest")


def _cache_batches(
    cache: ImageCache, manifest: Manifest, preprocess: PreprocessConfig, dev, batch_size: int
) -> Iterator[torch.Tensor]:
    rows = cache.rows_for(manifest)
    for start in range(0, len(rows), batch_size):
        yield eval_tensor(cache.get_batch(rows[start : start + batch_size]), preprocess).to(dev)


def _file_batches(
    paths: Sequence[Path], preprocess: PreprocessConfig, masker, dev, batch_size: int
) -> Iterator[torch.Tensor]:
    """Reference films as the Predictor prepares them; files the early gate refuses are skipped."""
    arrays = []
    for path in paths:
        try:
            image = load_image(path)
            _check_quality(image.pixels, image.name, image.meta)
        except CXRError as exc:
            logger.warning("reference image skipped: %s", exc)
            continue
        if header_refusal(image.meta):
            continue
        array = to_cache_array(image.pixels, preprocess.cache_size)
        arrays.append(masker(array[None])[0] if masker is not None else array)
        if len(arrays) == batch_size:
            yield eval_tensor(np.stack(arrays), preprocess).to(dev)
            arrays = []
    if arrays:
        yield eval_tensor(np.stack(arrays), preprocess).to(dev)


def fit_checkpoint_gate(
    checkpoint: str | Path,
    manifest: Manifest,
    cache_dir: str | Path,
    *,
    references: Sequence[str | Path] = (),
    dims: int = DEFAULT_DIMS,
    max_train: int = 2000,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Fit both detectors of a checkpoint and stamp them in; returns the new ``gate`` section.

    The weights and every other card field stay as they are.
    """
    ckpt = load_checkpoint(checkpoint)
    preprocess = ckpt.preprocess
    masker = lung_masker_for(preprocess, device)
    cache = ImageCache.build(
        manifest, cache_dir, preprocess.cache_size, progress=progress, transform=masker
    )  # the images the model saw
    dev = resolve_device(device)
    model = ckpt.build_model().to(dev)
    named = feature_layers(ckpt.card, model)
    layers = [module for _, module in named]
    train = manifest.split("train")
    if len(train) > max_train:
        train = train.with_frame(train.frame.sample(n=max_train, random_state=seed).sort_index())
    val = manifest.split("val")

    def from_cache(part: Manifest) -> Features:
        return collect_features(
            model, layers, _cache_batches(cache, part, preprocess, dev, batch_size)
        )

    def from_files(paths: Sequence[Path]) -> Features:
        return collect_features(
            model, layers, _file_batches(paths, preprocess, masker, dev, batch_size)
        )

    samples = [reference_images(folder, seed=seed) for folder in references]
    if not samples:
        logger.warning(
            "no --reference folders: the chest detector knows only the training population, so a "
            "film of another population may be refused instead of flagged as out of domain"
        )
    ref_features = {str(s.folder): (from_files(s.fit), from_files(s.val)) for s in samples}
    train_features, val_features = from_cache(train), from_cache(val)
    domain, chest, rates = fit_detectors(
        train_features,
        val_features,
        ref_features,
        heads=member_heads([name for name, _ in named]),
        dims=dims,
    )
    ages = train.frame["age"].to_numpy(dtype=np.float64) if "age" in train.frame else []
    counts = {"train": len(train_features[0]), "val": len(val_features[0])}
    counts |= {f"reference:{name}": len(f[0]) + len(v[0]) for name, (f, v) in ref_features.items()}
    section, tensors = gate_section(
        [name for name, _ in named], domain, chest, rates, counts=counts, ages=ages, dims=dims
    )
    section["reference_sample"] = {"limit": MAX_REFERENCE, "seed": seed}
    card: ModelCard = replace(ckpt.card, gate=section)
    stamp_checkpoint(checkpoint, card, tensors)
    logger.info(
        "input gate of %s: %.1f%% of %d validation images out of domain, %.1f%% refused",
        checkpoint,
        100 * rates["validation"]["out_of_domain"],
        counts["val"],
        100 * rates["validation"]["refused"],
    )
    return section
