"""Several datasets merged into one training run: harmonised label space, unknown where a source
does not label a finding, patients kept apart, per-source counts in the model card."""

from __future__ import annotations

import numpy as np

from cxr_core.models.checkpoint import read_model_card
from cxr_core.training import train
from cxr_core.training.data_setup import build_manifest
from tests.training.conftest import tiny_config, write_disease_folders


def test_two_sources_train_as_one(tmp_path):
    first = write_disease_folders(tmp_path / "first", seed=0)  # Edema, Atelectasis
    second = write_disease_folders(tmp_path / "second", seed=1)
    (second / "Edema").rename(second / "Cardiomegaly")  # labels Cardiomegaly instead of Edema
    config = tiny_config(
        tmp_path / "unused",
        tmp_path / "run",
        tmp_path / "cache",
        data__path="",
        data__sources=[{"name": "a", "path": str(first)}, {"name": "b", "path": str(second)}],
        epochs=1,
    )
    manifest = build_manifest(config.data)
    assert set(manifest.classes) == {"Atelectasis", "Edema", "Cardiomegaly"}
    from_b = manifest.frame["source"] == "b"
    assert manifest.frame.loc[from_b, "Edema"].isna().all()  # b does not label Edema: unknown
    assert manifest.frame.loc[~from_b, "Cardiomegaly"].isna().all()
    assert not set(manifest.frame.loc[from_b, "patient_id"]) & set(
        manifest.frame.loc[~from_b, "patient_id"]
    )
    result = train(config, progress=False)
    card = read_model_card(result.best_checkpoint)
    sources = card.data["sources"]
    assert (
        set(sources) == {"a", "b"}
        and sources["b"]["classes"]["Edema"]["unknown"] == sources["b"]["images"]
    )
    assert sources["a"]["images"] + sources["b"]["images"] == len(manifest)
    assert np.isnan(manifest.labels()).any() and card.num_classes == 3
