"""The model registry: one :class:`~cxr_core.models.spec.ModelSpec` per architecture, looked up by name.

Following timm, architectures register themselves with :func:`register_model` and every
caller (training, checkpoints, Grad-CAM, the dashboard) goes through :func:`create_model`
and :func:`get_model_spec`, so adding an architecture never touches an if-chain elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.models import weights as weights_io
from cxr_core.models.spec import ModelSpec

_REGISTRY: dict[str, ModelSpec] = {}

DEFAULT_MODEL = "densenet121"


def register_model(
    name: str, **spec_fields
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder(num_classes, dropout) -> nn.Module`` under ``name``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(name=name, builder=builder, **spec_fields)
        return builder

    return decorate


def list_models(*, segmentation: bool = False) -> list[str]:
    """Registered classifier names (or, with ``segmentation=True``, segmentation models), sorted."""
    return sorted(name for name, spec in _REGISTRY.items() if spec.segmentation == segmentation)


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered architecture; an unknown name lists the available ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; available models: {', '.join(list_models())}; "
            f"segmentation models: {', '.join(list_models(segmentation=True))}"
        ) from None


def create_model(
    name: str,
    num_classes: int,
    *,
    weights: str | Path | None = None,
    in_chans: int = 3,
    dropout: float = 0.0,
) -> nn.Module:
    """Build a registered architecture with a ``num_classes`` head and load ``weights``.

    ``weights``: ``None``/``"none"`` (random init), ``"imagenet"`` (offline only, see
    :mod:`cxr_core.models.weights`) or a local ``.pth``/``.pt``/``.safetensors`` file.
    ``in_chans=1`` sums the pretrained RGB stem filters so a gray image gives the same
    activations as the gray image replicated to three channels.
    """
    spec = get_model_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, not {num_classes!r}")
    if in_chans not in (1, 3):
        raise ConfigError(
            f"in_chans must be 1 (gray) or 3 (gray replicated to RGB), not {in_chans!r}"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), not {dropout!r}")
    model = spec.builder(num_classes, float(dropout))
    if in_chans != 3:
        weights_io.adapt_first_conv(model, spec.first_conv, in_chans)
    state = weights_io.resolve_weights(spec, weights)
    if state is not None:
        weights_io.load_weights(model, spec, state, source=str(weights))
    return model
