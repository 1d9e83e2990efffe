"""The public API a notebook imports: five names from the package itself, loaded on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cxr_core

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_five_names_are_the_library_functions():
    from cxr_core import Predictor as P
    from cxr_core import evaluate_checkpoint as e
    from cxr_core import explain as x
    from cxr_core import load_image as li
    from cxr_core import train as t
    from cxr_core.data.imaging import load_image
    from cxr_core.evaluation.run import evaluate_checkpoint
    from cxr_core.inference.explain import explain
    from cxr_core.inference.predictor import Predictor
    from cxr_core.training.engine import train

    assert (P, e, x, li, t) == (Predictor, evaluate_checkpoint, explain, load_image, train)
    assert set(cxr_core.__all__) <= set(dir(cxr_core))


def test_import_cxr_core_stays_light():
    code = "import sys, cxr_core; print(','.join(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="Trainer"):
        cxr_core.Trainer  # noqa: B018
