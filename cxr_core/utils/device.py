"""Choosing the torch device: one rule for training, evaluation and the Predictor.

``auto`` means the GPU when there is one, else the CPU. Asking for CUDA on a machine without
a usable GPU, or for a GPU it does not have, is refused with a message rather than failing
later inside a kernel launch.
"""

from __future__ import annotations

import torch

from cxr_core.errors import ConfigError


def gpu_index(local_rank: int, visible: int) -> int:
    """The GPU a process of a node takes: its LOCAL_RANK's, or the only one it can see.

    torchrun shows every GPU of the node to every process; SLURM (``--gpus-per-task=1``) and
    some schedulers show each task one GPU, always numbered 0, so ``cuda:LOCAL_RANK`` would
    not exist there.
    """
    if local_rank < visible:
        return local_rank
    if visible == 1:
        return 0
    raise ConfigError(
        f"process with LOCAL_RANK {local_rank} sees {visible} GPUs; start at most one process per visible GPU "
        "(torchrun --nproc_per_node) or show each process exactly one GPU (CUDA_VISIBLE_DEVICES)"
    )


def _parse(name: str) -> torch.device:
    try:
        return torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"device {name!r} is not a torch device ({exc}); use auto, cpu, cuda or cuda:N"
        ) from None


def resolve_device(preference: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The device ``preference`` names; a bare ``cuda`` means this process's GPU (``local_rank``)."""
    name = str(preference)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not name.startswith("cuda"):
        return _parse(name)
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device: '{name}' requested but no CUDA GPU is available; use device: auto or cpu"
        )
    if name == "cuda":
        return torch.device("cuda", gpu_index(local_rank, torch.cuda.device_count()))
    device = _parse(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device: {name} does not exist; this machine shows {torch.cuda.device_count()} GPU(s)"
        )
    return device
