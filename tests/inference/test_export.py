"""Exported graphs score like the Predictor on real images and carry what a consumer needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.data.preprocessing import to_cache_array
from cxr_core.errors import ConfigError
from cxr_core.inference import export as export_module
from cxr_core.inference.export import PARITY_TOLERANCE, export_checkpoint, load_exported
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import read_model_card
from tests.checkpoint_fixtures import build_checkpoint_dir

BUNDLED_NIH = Path(__file__).resolve().parents[2] / "checkpoints" / "nih14" / "model.safetensors"


@pytest.fixture(scope="module")
def nih_paths(nih14_root) -> list[Path]:
    return sorted((nih14_root / "images").glob("*.png"))[:4]


def _arrays(paths, checkpoint) -> list[np.ndarray]:
    size = read_model_card(checkpoint).get_preprocess().cache_size
    return [to_cache_array(load_image(p).pixels, size) for p in paths]


def test_torchscript_matches_the_predictor_and_carries_metadata(tmp_path, nih_paths, capsys):
    checkpoint = build_checkpoint_dir(tmp_path, "tiny", with_eval=False) / "model.safetensors"
    out = tmp_path / "tiny.pt"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(checkpoint),
                "--format",
                "torchscript",
                "--out",
                str(out),
                "--tta",
                "hflip",
                "--check-images",
                *map(str, nih_paths),
            ]
        )
        == 0
    )
    assert "max |Δp| against the Predictor on 4 images" in capsys.readouterr().out
    run, metadata = load_exported(out)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", tta="hflip")
    assert metadata["classes"] == list(predictor.classes) and metadata["tta"] == "hflip"
    assert metadata["preprocess"] == predictor.preprocess.to_dict()
    assert metadata["thresholds"] == predictor.thresholds
    images = [load_image(p) for p in nih_paths]
    batch = predictor.prepare(images)
    expected = predictor.predict_probabilities(images)
    got = run(batch.numpy())
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE
    assert np.ptp(expected) > 1e-4
    plain = Predictor.from_checkpoint(checkpoint, device="cpu", tta="none").probabilities_of(batch)
    assert np.abs(plain - got).max() > 1e-5  # the flip really is inside the graph


def test_a_graph_that_misses_parity_is_not_kept(tmp_path, nih_paths, monkeypatch):
    checkpoint = build_checkpoint_dir(tmp_path, "tiny", with_eval=False) / "model.safetensors"
    monkeypatch.setattr(export_module, "check_parity", lambda *a, **k: 3e-3)
    with pytest.raises(ConfigError, match="differs from the Predictor by 3.00e-03"):
        export_checkpoint(
            checkpoint,
            "torchscript",
            tmp_path / "x.pt",
            parity_batch=_arrays(nih_paths, checkpoint),
        )
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ConfigError, match="unknown export format"):
        export_checkpoint(checkpoint, "tflite", tmp_path / "x.tflite")


@pytest.mark.slow
def test_onnx_of_the_bundled_ensemble_matches_the_predictor(tmp_path, nih_paths):
    """EfficientNet-Lite0 + Lite2 at 224/256 px with flip TTA: the antialiased member resize exports too."""
    pytest.importorskip("onnxruntime")
    out, delta = export_checkpoint(
        BUNDLED_NIH, "onnx", tmp_path / "nih14.onnx", parity_batch=_arrays(nih_paths, BUNDLED_NIH)
    )
    assert delta is not None and delta <= PARITY_TOLERANCE
    run, metadata = load_exported(out)
    predictor = Predictor.from_checkpoint(BUNDLED_NIH, device="cpu")
    assert metadata["classes"] == list(predictor.classes) and metadata["architecture"] == "ensemble"
    images = [load_image(p) for p in nih_paths]
    batch = predictor.prepare(images)
    assert (
        np.abs(run(batch.numpy()[:3]) - predictor.predict_probabilities(images)[:3]).max()
        <= PARITY_TOLERANCE
    )
