"""A tiny 14-finding checkpoint whose calls are known in advance, for the report, worklist and PACS tests.

``small_cnn`` at 64 px scores a film in milliseconds. Its thresholds make the calls independent
of what the untrained network outputs: :data:`ALWAYS_CALLED` findings have threshold 0 (always
called), the rest 1.0 (called only at probability 1, which a sigmoid never reaches), so a test
knows which findings a scored film has and which an out-of-domain film must not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint

ALWAYS_CALLED = ("Pneumothorax", "Cardiomegaly")


def tiny_nih14_checkpoint(
    folder: Path, name: str = "tiny_nih14", thresholds: dict[str, float] | None = None
) -> Path:
    """``folder/name/model.safetensors``: an untrained 14-finding model with fixed calls (or
    the given ``thresholds``)."""
    torch.manual_seed(3)
    preprocess = PreprocessConfig(cache_size=64, input_size=64, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=1,
        thresholds=thresholds or {c: (0.0 if c in ALWAYS_CALLED else 1.0) for c in NIH14.classes},
        threshold_method="fixed for tests",
        provenance="untrained test fixture",
        data={"age_range": [18.0, 90.0]},
    )
    path = folder / name / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, create_model("small_cnn", 14, in_chans=1).state_dict(), card)
