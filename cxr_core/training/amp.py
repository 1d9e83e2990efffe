"""Mixed precision: which autocast dtype a run uses, and the fp16 loss scale across a resume.

``amp: auto`` is float32 on the CPU, bf16 on GPUs with native bf16 (compute capability 8.0
and up) and fp16 with a GradScaler on older GPUs, where bf16 is emulated and slow. Under fp16
a batch whose loss overflows is skipped by the scaler and left out of the epoch loss; only an
epoch without a single finite batch stops the run.
"""

from __future__ import annotations

import logging

import torch

from cxr_core.errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for full float32.

    ``auto`` asks for bf16 only where the GPU computes it natively (compute capability 8.0:
    A100, RTX 30xx and later). ``torch.cuda.is_bf16_supported()`` is also true on V100 and T4,
    through emulation several times slower than fp16, so it cannot decide.
    """
    if device.type != "cuda":
        if amp in ("auto", "off"):
            return None
        if amp == "bf16":
            return torch.bfloat16
        raise ConfigError("amp: fp16 needs a CUDA GPU; use auto, off or bf16 on the CPU")
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    native_bf16 = torch.cuda.get_device_capability(device) >= (8, 0)
    if amp == "bf16":
        if not native_bf16:
            logger.warning(
                "amp: bf16 on %s (compute capability %s) is emulated and slower than fp16; "
                "amp: auto would choose fp16",
                device,
                torch.cuda.get_device_capability(device),
            )
        return torch.bfloat16
    return torch.bfloat16 if native_bf16 else torch.float16


def amp_name(dtype: torch.dtype | None) -> str:
    """How the card, the log and the training state name an autocast dtype (``off`` for float32)."""
    return str(dtype).replace("torch.", "") if dtype else "off"


def load_scaler_state(
    scaler: torch.amp.GradScaler, saved: dict, *, saved_amp: str, amp: str
) -> None:
    """Restore the fp16 loss scale when both runs use it; say what happens when they differ.

    A disabled scaler saves ``{}``, and an enabled one refuses ``{}``: resuming fp16 after bf16
    or float32 starts from a fresh scale, resuming anything else after fp16 drops the old one.
    """
    if scaler.is_enabled() and saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled():
        logger.warning(
            "resuming an amp %s run with amp %s: the fp16 loss scale starts afresh", saved_amp, amp
        )
    elif saved:
        logger.warning(
            "resuming an amp %s run with amp %s: its fp16 loss scale is no longer used",
            saved_amp,
            amp,
        )
