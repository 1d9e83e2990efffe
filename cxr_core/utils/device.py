"""Choosing the torch device: one rule for training, evaluation and the Predictor.

``auto`` means the GPU when there is one, else the CPU. Asking for CUDA on a machine without
a usable GPU is refused with a message rather than failing later inside a kernel launch.
"""

from __future__ import annotations

import torch

from cxr_core.errors import ConfigError


def resolve_device(preference: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The device ``preference`` names; a bare ``cuda`` means this process's GPU ``local_rank``."""
    name = str(preference)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device: '{name}' requested but no CUDA GPU is available; use device: auto or cpu"
            )
        if name == "cuda":
            return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device {name!r} is not a torch device ({exc}); use auto, cpu, cuda or cuda:N"
        ) from None
