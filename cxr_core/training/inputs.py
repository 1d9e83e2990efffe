"""What a run's network is fed: the preprocessing every task records in its model card."""

from __future__ import annotations

from cxr_core.artifacts.lung_model import lung_mask_settings
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.models import get_model_spec
from cxr_core.training.config import TrainConfig


def build_preprocess(config: TrainConfig) -> PreprocessConfig:
    """The card's preprocessing of a run; with ``preprocess.lung_mask``, the lung model is named
    by its weights checksum (``ConfigError`` when it is missing or not a segmentation model)."""
    spec = get_model_spec(config.model.name)
    p = config.preprocess
    return PreprocessConfig(
        cache_size=config.data.cache_size,
        input_size=p.input_size,
        mean=tuple(p.mean) if p.mean else spec.input_mean,
        std=tuple(p.std) if p.std else spec.input_std,
        in_chans=config.model.in_chans,
        lung_mask=lung_mask_settings(p.lung_checkpoint, p.lung_dilation) if p.lung_mask else None,
    )
