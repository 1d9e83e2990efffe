"""How unlike a reference set of films an image is: multi-layer feature Mahalanobis distance.

The detector follows Lee et al. (NeurIPS 2018, "A simple unified framework for detecting
out-of-distribution samples and adversarial attacks"): a Gaussian per network layer over the
layer's pooled activations, the Mahalanobis distance of a new image under each, and one score
from all layers. Early layers see texture and exposure (noise, JPEG, another detector), late
layers see anatomy and the population (a child's chest, a lateral view), so together they flag
shifts that the penultimate features alone (the gate before this one) missed: measured on the
bundled models, the penultimate distance flagged about half of the adult films on the
pediatric model, the multi-layer score all but a few (``benchmarks/bench_ood.py``).

Per layer (each block the registry lists for an architecture; an ensemble's members each
contribute theirs) the feature is the channel-wise spatial mean and standard deviation of the
block's output. Its Gaussian is low-rank plus isotropic (probabilistic PCA: the top ``dims``
principal directions with their own variances, one shared variance for the rest), which keeps
the statistics small and the inverse well conditioned with fewer images than dimensions. The
layers' log-distances are put on one scale with their validation mean and spread, and the
score is their mean: about 0 for a typical validation image, in validation standard deviations.

Two detectors of this kind guard a model (:mod:`cxr_core.inference.gate`): *domain*, fitted on
the model's own training images, thresholded on its validation images (out of domain above);
*chest*, fitted on chest radiographs of every population at hand, thresholded well above the
most unusual real film (not a chest radiograph above).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.models.card import ModelCard
from cxr_core.models.ensemble import MemberSpec
from cxr_core.models.registry import get_model_spec

DEFAULT_DIMS = 32


def member_heads(names: Sequence[str]) -> list[int]:
    """Indexes of each member's last layer among :func:`feature_layers` names (its head block)."""
    members = [name.split(".", 1)[0] for name in names]
    return [i for i, m in enumerate(members) if i == len(members) - 1 or members[i + 1] != m]


def feature_layers(card: ModelCard, model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks whose outputs the detector reads, named ``m<member>.<block>``, in forward order.

    A block the registry lists as a group of modules is read at its last module.
    """
    if card.members:
        members = [
            (m, MemberSpec.from_dict(d).architecture) for m, d in zip(model.members, card.members)
        ]
    else:
        members = [(model, card.architecture)]
    layers = []
    for index, (member, architecture) in enumerate(members):
        for name, block in get_model_spec(architecture).blocks(member):
            module = block[-1] if isinstance(block, nn.ModuleList) else block
            layers.append((f"m{index}.{name}", module))
    return layers


class LayerTap:
    """Pooled activations of a model's layers during forward passes, collected per thread.

    Forward hooks stay registered on the shared model; a thread collects only inside
    :meth:`run`, so concurrent predictions never see each other's features, and only each
    layer's first output is kept (test-time augmentation runs the model again on the mirrored
    image). A deep copy of the model (the Grad-CAM replica) carries the hooks along but never
    collects.
    """

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self._local = threading.local()
        self._count = len(layers)
        for index, layer in enumerate(layers):
            layer.register_forward_hook(self._hook(index))

    def __deepcopy__(self, memo: dict) -> LayerTap:
        return self  # thread-local state cannot be copied; the replica never calls run()

    def _hook(self, index: int) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            found = getattr(self._local, "found", None)
            if found is not None and index not in found:
                out = output.detach().float()
                found[index] = torch.cat([out.mean(dim=(2, 3)), out.std(dim=(2, 3))], dim=1)

        return hook

    def run(self, forward: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, list[np.ndarray]]:
        """``forward()``'s result and, per layer, the (B, 2C) pooled features of its first pass."""
        self._local.found = {}
        try:
            result = forward()
            found = self._local.found
        finally:
            self._local.found = None
        if len(found) != self._count:
            raise RuntimeError(f"expected features from {self._count} layers, got {len(found)}")
        return result, [found[i].cpu().numpy().astype(np.float64) for i in range(self._count)]


@dataclass(frozen=True)
class LayerGaussian:
    """One layer's low-rank-plus-isotropic Gaussian over the reference images' features."""

    mean: np.ndarray  # (F,)
    components: np.ndarray  # (F, k), orthonormal columns
    variances: np.ndarray  # (k,)
    residual_variance: float

    @classmethod
    def fit(cls, features: np.ndarray, dims: int = DEFAULT_DIMS) -> LayerGaussian:
        """Maximum-likelihood PPCA: the top ``dims`` directions of an SVD of the centred features,
        the mean variance of the remaining directions as the isotropic part."""
        features = np.asarray(features, dtype=np.float64)
        mean = features.mean(axis=0)
        _, singular, vt = np.linalg.svd(features - mean, full_matrices=False)
        eig = singular**2 / (features.shape[0] - 1)
        k = int(max(1, min(dims, (eig > eig[0] * 1e-9).sum())))
        total = float(((features - mean) ** 2).sum() / (features.shape[0] - 1))
        rest = max(total - float(eig[:k].sum()), 0.0) / max(features.shape[1] - k, 1)
        residual = max(rest, float(eig[k - 1]) * 1e-3, 1e-12)  # the rest may vanish (N << F)
        return cls(mean, vt[:k].T.copy(), np.maximum(eig[:k], residual), residual)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each (N, F) row, divided by sqrt(F) so a typical reference
        image sits near 1 whatever the layer's width."""
        centred = np.asarray(features, dtype=np.float64) - self.mean
        projected = centred @ self.components
        residual = centred - projected @ self.components.T
        squared = (projected**2 / self.variances).sum(axis=1)
        squared += (residual**2).sum(axis=1) / self.residual_variance
        return np.sqrt(squared / self.mean.size)


@dataclass(frozen=True)
class Detector:
    """Per-layer Gaussians, each layer's validation log-distance centre and scale, a threshold.

    ``index`` says which of the model's feature layers each Gaussian reads. :meth:`scores` is
    the mean over those layers of ``(log d_l - centre_l) / scale_l``.
    """

    index: tuple[int, ...]
    layers: tuple[LayerGaussian, ...]
    centres: np.ndarray  # (L,)
    scales: np.ndarray  # (L,)
    threshold: float

    def layer_scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """(N, L) standardised log-distances, one column per layer it reads."""
        if max(self.index) >= len(features):
            raise ConfigError(
                f"the detector reads layer {max(self.index)}, the model gave {len(features)} layers"
            )
        logs = np.stack(
            [
                np.log(np.maximum(g.distances(features[i]), 1e-12))
                for i, g in zip(self.index, self.layers)
            ],
            axis=1,
        )
        return (logs - self.centres) / self.scales

    def scores(self, features: Sequence[np.ndarray]) -> np.ndarray:
        return self.layer_scores(features).mean(axis=1)

    def flagged(self, features: Sequence[np.ndarray]) -> np.ndarray:
        return self.scores(features) > self.threshold

    def with_threshold(self, threshold: float) -> Detector:
        return Detector(self.index, self.layers, self.centres, self.scales, float(threshold))

    # ------------------------------------------------------------------ storage

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {}
        for i, g in enumerate(self.layers):
            for key, value in (("mean", g.mean), ("components", g.components)):
                out[f"{prefix}/{i}/{key}"] = torch.from_numpy(value.astype(np.float32))
            out[f"{prefix}/{i}/variances"] = torch.from_numpy(g.variances.astype(np.float32))
        return out

    def to_section(self) -> dict:
        """The card fields that complete the tensors (plain numbers, readable in the card)."""
        return {
            "threshold": self.threshold,
            "layer_index": list(self.index),
            "centres": [float(v) for v in self.centres],
            "scales": [float(v) for v in self.scales],
            "residual_variances": [g.residual_variance for g in self.layers],
        }

    @classmethod
    def from_storage(cls, tensors: dict[str, torch.Tensor], section: dict, prefix: str) -> Detector:
        try:
            residuals = [float(v) for v in section["residual_variances"]]
            index = tuple(int(i) for i in section["layer_index"])
            centres = np.asarray(section["centres"], dtype=np.float64)
            scales = np.asarray(section["scales"], dtype=np.float64)
            threshold = float(section["threshold"])
            layers = tuple(
                LayerGaussian(
                    *(tensors[f"{prefix}/{i}/{k}"].double().numpy() for k in _KEYS), residual
                )
                for i, residual in enumerate(residuals)
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the input gate's {prefix} statistics lack {exc}; re-run `cxr gate fit`"
            ) from None
        detector = cls(index, layers, centres, scales, threshold)
        if not detector.consistent():
            raise CheckpointError(
                f"the input gate's {prefix} statistics are inconsistent; re-run `cxr gate fit`"
            )
        return detector

    def consistent(self) -> bool:
        shapes_ok = all(
            g.components.shape == (g.mean.size, g.variances.size)
            and (g.variances > 0).all()
            and g.residual_variance > 0
            for g in self.layers
        )
        return (
            shapes_ok
            and len(self.index) == len(self.layers) > 0
            and min(self.index) >= 0
            and self.centres.shape == self.scales.shape == (len(self.layers),)
            and bool((self.scales > 0).all())
            and np.isfinite(self.threshold)
        )


_KEYS = ("mean", "components", "variances")


def fit_detector(
    train: Sequence[np.ndarray],
    validation: Sequence[np.ndarray],
    *,
    dims: int = DEFAULT_DIMS,
    index: Sequence[int] | None = None,
) -> tuple[Detector, np.ndarray]:
    """A detector (threshold +inf, to be set by the caller) and the validation scores.

    ``train`` and ``validation`` hold one (N, F_l) feature array per model layer; ``index``
    picks the layers the detector reads (None: all).
    """
    n_train, n_val = len(train[0]), len(validation[0])
    if n_train < 2 or n_val < 2:
        raise ConfigError(
            f"fitting the input gate needs >= 2 training and >= 2 validation images, got "
            f"{n_train} and {n_val}"
        )
    index = tuple(range(len(train))) if index is None else tuple(int(i) for i in index)
    layers = tuple(LayerGaussian.fit(train[i], dims) for i in index)
    logs = np.stack(
        [np.log(np.maximum(g.distances(validation[i]), 1e-12)) for i, g in zip(index, layers)],
        axis=1,
    )
    centres, scales = logs.mean(axis=0), np.maximum(logs.std(axis=0), 1e-6)
    detector = Detector(index, layers, centres, scales, np.inf)
    return detector, detector.scores(validation)
