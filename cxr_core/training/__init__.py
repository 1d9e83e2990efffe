"""Training: YAML config, the engine (CPU/CUDA, AMP, DDP via torchrun) with its tasks, and
resumable state.

:func:`train` and :class:`TrainResult` come from :mod:`cxr_core.training.engine`, imported
lazily so the config module alone stays light for tools that only validate configs.
"""

from cxr_core.training.config import TrainConfig, load_config

__all__ = ["TrainConfig", "TrainResult", "load_config", "train"]


def __getattr__(name: str):
    if name in ("train", "TrainResult"):
        from cxr_core.training import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'cxr_core.training' has no attribute {name!r}")
