"""What the library knows about one architecture: the record the registry keeps per name.

Apart from the registry (:mod:`.registry`) so that the weights loader (:mod:`.weights`), which
reads a spec, and the registry, which calls the loader, do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from cxr_core.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD


@dataclass(frozen=True)
class ModelSpec:
    """Everything the rest of the library needs to know about one architecture.

    ``builder(num_classes, dropout)`` returns the backbone with a fresh ``Dropout + Linear``
    head at attribute path ``head``. ``first_conv`` is the attribute path of the stem
    convolution (adapted for 1-channel input). ``imagenet`` returns ImageNet weights named
    like the built model, or raises :class:`WeightsUnavailableError` when they are not on
    disk. ``input_mean``/``input_std`` are the per-channel normalisation the ImageNet weights
    were trained with (for gray input the mean of the three is the natural choice).
    ``segmentation`` marks mask models (one logit map per class; ``head`` is then the decoder),
    which :func:`list_models` lists apart from the classifiers.
    """

    name: str
    builder: Callable[..., nn.Module]
    target_layer: Callable[[nn.Module], nn.Module]
    head: str
    blocks: Callable[[nn.Module], list[tuple[str, nn.Module]]]
    default_input_size: int
    description: str
    first_conv: str
    imagenet: Callable[[], dict] | None = None
    input_mean: tuple[float, float, float] = IMAGENET_MEAN
    input_std: tuple[float, float, float] = IMAGENET_STD
    segmentation: bool = False
