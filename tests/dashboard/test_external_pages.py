"""An external-predictions run is a model in the dashboard: Performance, Thresholds and Review work on
it, Predict and heatmaps say why they cannot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.evaluation.external import evaluate_external
from tests.checkpoint_fixtures import build_checkpoint_dir

REPO_ROOT = Path(__file__).resolve().parents[2]
SELECTED = "cxr_selected_checkpoint"


@pytest.fixture(scope="module")
def external_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("external_dash")
    ours = build_checkpoint_dir(root / "checkpoints", "ours")
    frame, classes = load_predictions(ours / "eval" / "val" / "predictions.csv")
    manifest = Manifest(
        pd.DataFrame(
            {
                "image_id": frame["image_id"],
                "path": [str(root / "data" / p) for p in frame["path"]],
                "patient_id": frame["patient_id"],
                "view": "",
                "split": "val",
                **{c: frame[f"label:{c}"] for c in classes},
            }
        ),
        LabelSpace("fixture", tuple(classes)),
        "fixture",
    )
    vendor = frame[["image_id"]].assign(**{c: frame[f"prob:{c}"] for c in classes})
    vendor.to_csv(root / "vendor.csv", index=False)
    return (
        evaluate_external(
            root / "vendor.csv",
            manifest,
            "val",
            root / "checkpoints" / "vendor-x",
            name="vendor-x",
            n_boot=20,
        )
        and root
    )


@pytest.fixture
def env(external_run, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(external_run / "checkpoints"))
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "review"))
    monkeypatch.setenv("CXR_DATA_ROOT", str(external_run / "data"))
    return external_run / "checkpoints" / "vendor-x"


def page(name: str, run: Path) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / f"{name}.py"), default_timeout=120)
    at.session_state[SELECTED] = str(run.resolve())
    return at.run()


@pytest.mark.parametrize("name", ["performance", "thresholds", "review", "models"])
def test_pages_work_on_external_predictions(env, name):
    at = page(name, env)
    assert not at.exception, [e.value for e in at.exception]
    if (
        name == "review"
    ):  # the heatmap choice appears once a film is shown; for external runs it offers none
        assert all(s.options == ["none"] for s in at.selectbox if s.label == "Heatmap")


def test_predict_explains_that_external_runs_have_no_weights(env):
    at = page("predict", env)
    assert not at.exception, [e.value for e in at.exception]
    assert any("predictions made by another tool" in i.value for i in at.info)
