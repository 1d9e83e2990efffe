"""Training: YAML config, the loop (CPU/CUDA, AMP, DDP via torchrun) and resumable state.

Import :func:`train` from :mod:`cxr_core.training.loop` lazily through this package; the
config module alone stays light for tools that only validate configs.
"""

from cxr_core.training.config import TrainConfig, load_config

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from cxr_core.training import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'cxr_core.training' has no attribute {name!r}")
