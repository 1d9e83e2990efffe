"""cxr_core: chest X-ray classification library.

Data flows one way: files -> manifest -> cache -> model -> predictions -> metrics -> pages.
This package never imports Streamlit; the dashboard imports it.

The public API, for notebooks and scripts (``docs/api.md``)::

    from cxr_core import Predictor, evaluate_checkpoint, explain, load_image, train

Each name is imported on first use, so ``import cxr_core`` stays light (no torch).
"""

from cxr_core.version import __version__

__all__ = ["Predictor", "__version__", "evaluate_checkpoint", "explain", "load_image", "train"]


def __getattr__(name: str):
    if name == "Predictor":
        from cxr_core.inference.predictor import Predictor

        return Predictor
    if name == "explain":
        from cxr_core.inference.explain import explain

        return explain
    if name == "load_image":
        from cxr_core.data.imaging import load_image

        return load_image
    if name == "evaluate_checkpoint":
        from cxr_core.evaluation.run import evaluate_checkpoint

        return evaluate_checkpoint
    if name == "train":
        from cxr_core.training.engine import train

        return train
    raise AttributeError(f"module 'cxr_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
