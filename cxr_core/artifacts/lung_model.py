"""Which lung model masks the images of a lung-masked classifier, and where it is on disk.

A lung-masked classifier is only the model its card describes together with the lung model that
masked its training images, so the card names that lung model by its weights checksum
(``preprocess.lung_mask.weights_sha256``) and by where it was at training time. Here the
training side turns a config's lung checkpoint into those settings, and every reader (the
Predictor, ``cxr evaluate``, ``cxr card refresh``, ``cxr gate fit``) finds the same weights
again: at the recorded path, else the bundled ``checkpoints/lungs`` when its checksum matches
(a moved or freshly cloned project). Another lung model is never substituted silently.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxr_core.artifacts.catalog import BUNDLED_DIR, checkpoint_digest
from cxr_core.artifacts.run_dir import MODEL_FILE
from cxr_core.data.lung_mask import DEFAULT_DILATION, LungMaskConfig
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.models.checkpoint import load_checkpoint, read_model_card
from cxr_core.models.lung_mask import LungMasker
from cxr_core.utils.tasks import Task

DEFAULT_LUNG_CHECKPOINT = BUNDLED_DIR / "lungs" / MODEL_FILE


def lung_mask_settings(
    checkpoint: str | Path | None = None, dilation: float = DEFAULT_DILATION
) -> LungMaskConfig:
    """The card's lung-mask settings for training with ``checkpoint`` (None: the bundled lung model).

    Raises ``ConfigError`` when the file is missing, unreadable or not a segmentation model.
    """
    path = Path(checkpoint) if checkpoint else DEFAULT_LUNG_CHECKPOINT
    key = "preprocess.lung_checkpoint"
    if not path.is_file():
        hint = (
            "set it to a lung segmentation checkpoint (.safetensors)"
            if checkpoint
            else "restore checkpoints/lungs from the repository, or set it to a lung segmentation checkpoint"
        )
        raise ConfigError(f"{key}: the lung model {path} does not exist; {hint}")
    try:
        card = read_model_card(path)
    except CheckpointError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if card.label_space.get("task") != Task.SEGMENTATION.value:
        raise ConfigError(
            f"{key}: {path} is a {card.label_space.get('task')} model, not a lung segmentation model; "
            "use checkpoints/lungs/model.safetensors or a model trained with task: segmentation"
        )
    return LungMaskConfig(
        weights_sha256=checkpoint_digest(path), checkpoint=str(path.resolve()), dilation=dilation
    )


def find_lung_checkpoint(settings: LungMaskConfig) -> Path:
    """The lung checkpoint whose weights checksum is the one ``settings`` records.

    Looks at the recorded path, then at the bundled lung model; raises ``CheckpointError``
    naming both when neither holds those weights.
    """
    candidates = [Path(settings.checkpoint)] if settings.checkpoint else []
    candidates.append(DEFAULT_LUNG_CHECKPOINT)
    for path in candidates:
        if path.is_file() and checkpoint_digest(path) == settings.weights_sha256:
            return path
    looked = " nor ".join(str(p) for p in dict.fromkeys(candidates))
    raise CheckpointError(
        f"this model was trained on lung-masked images made by the lung model with weights sha256 "
        f"{settings.weights_sha256[:12]}..., which is neither at {looked}; put that lung checkpoint back at "
        f"{settings.checkpoint or DEFAULT_LUNG_CHECKPOINT} (another lung model would mask differently)"
    )


def lung_masker_for(
    preprocess: PreprocessConfig, device: str | torch.device = "cpu"
) -> LungMasker | None:
    """The masker ``preprocess`` asks for (None when the model sees whole images)."""
    if preprocess.lung_mask is None:
        return None
    return LungMasker(
        load_checkpoint(find_lung_checkpoint(preprocess.lung_mask)), preprocess.lung_mask, device
    )
