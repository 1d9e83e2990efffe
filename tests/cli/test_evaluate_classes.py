"""``cxr evaluate --classes``: the bundled NIH model scored on a subset of its findings, on the
same images as without the option, with the same probabilities for the findings kept."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cxr_core.cli.main import main

pytestmark = pytest.mark.slow

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "nih14" / "model.safetensors"


def _evaluate(data: Path, out: Path, cache: Path, *extra: str) -> tuple[dict, pd.DataFrame]:
    args = ["evaluate", "--checkpoint", str(CHECKPOINT), "--data", str(data), "--split", "val"]
    args += ["--val", "0.5", "--n-boot", "10", "--device", "cpu", "--no-progress"]
    assert main([*args, "--cache-dir", str(cache), "--out", str(out), *extra]) == 0
    report = json.loads((out / "report.json").read_text())
    return report, pd.read_csv(out / "predictions.csv", dtype={"image_id": str})


def test_a_class_subset_scores_the_same_images_on_fewer_findings(nih_subset, tmp_path):
    data = nih_subset(tmp_path / "nih", count=24)
    cache = tmp_path / "cache"
    full, full_rows = _evaluate(data, tmp_path / "all", cache)
    subset, rows = _evaluate(data, tmp_path / "two", cache, "--classes", "Effusion,Cardiomegaly")

    assert subset["class_names"] == ["Pleural Effusion", "Cardiomegaly"]
    assert len(full["class_names"]) == 14
    assert list(rows["image_id"]) == list(full_rows["image_id"])
    for name in subset["class_names"]:
        pd.testing.assert_series_equal(rows[f"prob:{name}"], full_rows[f"prob:{name}"])
    entries = pd.read_csv(data / "Data_Entry_2017.csv", dtype=str).set_index("Image Index")
    effusion = entries.loc[rows["image_id"], "Finding Labels"].str.contains("Effusion")
    assert subset["per_class"]["Pleural Effusion"]["n_pos"] == int(effusion.sum())
    assert "prob:Atelectasis" not in rows and "prob:Atelectasis" in full_rows
