"""Model registry, weights and fine-tuning policies.

Importing this package registers every architecture in :mod:`.architectures` and the
segmentation U-Nets in :mod:`.segmentation`.
"""

from cxr_core.models import architectures as _architectures  # noqa: F401  (registers the models)
from cxr_core.models import segmentation as _segmentation  # noqa: F401  (registers the U-Nets)
from cxr_core.models.finetune import apply_finetune, freeze_bn_stats
from cxr_core.models.registry import (
    DEFAULT_MODEL,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)
from cxr_core.models.spec import ModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "ModelSpec",
    "apply_finetune",
    "create_model",
    "freeze_bn_stats",
    "get_model_spec",
    "list_models",
    "register_model",
]
