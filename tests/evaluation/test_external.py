"""Predictions made by another tool are scored exactly like our own runs and listed as a model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cxr_core.artifacts.catalog import discover_checkpoints, load_eval_run, review_cases
from cxr_core.cli.main import main
from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import DatasetError, UnknownClassError
from cxr_core.evaluation.external import read_external_predictions
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.training.config import DataConfig
from cxr_core.training.data_setup import build_manifest

val_placeholder = "<second val image>"
NIH_SPELLING = {"Pleural Effusion": "Effusion", "Pleural Thickening": "Pleural_Thickening"}


@pytest.fixture(scope="module")
def setup(nih_subset, tmp_path_factory) -> dict:
    """A small_cnn with an NIH14 head over 40 real NIH radiographs split half/half, as `cxr train` would card it."""
    base = tmp_path_factory.mktemp("external")
    data = nih_subset(base / "nih40", 40)
    torch.manual_seed(0)
    model = create_model("small_cnn", 14, in_chans=1)
    preprocess = PreprocessConfig(
        cache_size=64, input_size=64, in_chans=1, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    data_section = {
        "path": str(data),
        "val": 0.5,
        "cache_dir": str(base / "cache"),
        "cache_size": 64,
    }
    thresholds = {c: round(0.3 + 0.02 * i, 3) for i, c in enumerate(NIH14.classes)}
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=1,
        thresholds=thresholds,
        threshold_method="fixed",
        training={"config": {"data": data_section}},
        validation={"n_boot": 40, "seed": 3},
    )
    checkpoint = save_checkpoint(base / "ours" / "model.safetensors", model.state_dict(), card)
    manifest = build_manifest(DataConfig(**data_section))
    return {"base": base, "data": data, "checkpoint": checkpoint, "manifest": manifest}


def third_party_csv(checkpoint: Path, data: Path, out: Path) -> Path:
    """What another script would write: NIH's column names and spellings, its own row order, every
    image of the dataset (both splits), and a finding the NIH labels do not have."""
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    files = sorted((data / "images").glob("*.png"))
    random.Random(5).shuffle(files)
    results = predictor.predict_files(files, batch_size=8)
    rows = [
        {
            "Image Index": Path(r.path).name,
            **{NIH_SPELLING.get(c, c): p for c, p in r.prediction.probabilities.items()},
            "Fracture": 0.01,
        }
        for r in results
    ]
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def test_external_predictions_give_our_own_report(setup, capsys):
    base = setup["base"]
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(setup["checkpoint"]),
                "--split",
                "val",
                "--out",
                str(base / "ours_val"),
                "--no-progress",
            ]
        )
        == 0
    )
    csv = third_party_csv(setup["checkpoint"], setup["data"], base / "vendor_x.csv")
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(csv),
                "--like",
                str(setup["checkpoint"]),
                "--split",
                "val",
                "--n-boot",
                "40",
                "--seed",
                "3",
                "--name",
                "vendor-x",
                "--out",
                str(base / "runs" / "vendor-x"),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "Fracture" in err

    ours = json.loads((base / "ours_val" / "report.json").read_text())
    theirs = json.loads((base / "runs" / "vendor-x" / "eval" / "val" / "report.json").read_text())
    assert theirs["label_mapping"]["model_only"] == ["Fracture"]
    assert theirs["label_mapping"]["renamed"] == {
        "Effusion": "Pleural Effusion",
        "Pleural_Thickening": "Pleural Thickening",
    }
    assert theirs["evaluation"]["notes"][0].startswith("20 rows of images outside the 'val' split")
    assert theirs["per_class"].keys() == ours["per_class"].keys()
    for cls, expected in ours["per_class"].items():
        for key, value in expected.items():
            got = theirs["per_class"][cls][key]
            if isinstance(value, float):
                assert got == pytest.approx(value, abs=1e-7, nan_ok=True), (cls, key)
            elif isinstance(value, list) and value and isinstance(value[0], float):
                assert got == pytest.approx(value, abs=1e-7, nan_ok=True), (cls, key)
            else:
                assert got == value, (cls, key)
    for key in (
        "macro_auroc",
        "macro_auroc_ci",
        "n_images",
        "n_patients",
        "macro_classes_included",
    ):
        assert theirs["headline"][key] == pytest.approx(ours["headline"][key], abs=1e-9), key
    ours_frame = pd.read_csv(base / "ours_val" / "predictions.csv")
    theirs_frame = pd.read_csv(base / "runs" / "vendor-x" / "eval" / "val" / "predictions.csv")
    assert list(theirs_frame.columns) == list(ours_frame.columns)
    assert (theirs_frame["image_id"] == ours_frame["image_id"]).all()
    assert (
        np.abs(
            theirs_frame.filter(like="prob:").to_numpy()
            - ours_frame.filter(like="prob:").to_numpy()
        ).max()
        < 1e-5
    )

    entries = {e.name: e for e in discover_checkpoints([base / "runs"])}
    entry = entries["external: vendor-x"]
    assert entry.ok and entry.external and entry.eval_splits == ("val",)
    assert entry.card.thresholds["Atelectasis"] == pytest.approx(0.3)
    run = load_eval_run(entry, "val")
    assert run.classes == NIH14.classes and not run.warnings
    cases = review_cases(run, "Atelectasis", entry.card.thresholds["Atelectasis"])
    assert len(cases) == 20


def _write(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path


def _valid_frame(manifest) -> pd.DataFrame:
    frame = pd.DataFrame({"image_id": manifest.frame["image_id"]})
    for i, c in enumerate(NIH14.classes):
        frame[c] = np.linspace(0.05, 0.95, len(frame))[:: -1 if i % 2 else 1]
    return frame


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            lambda f, val: f.assign(image_id=f["image_id"].where(f.index != 3, "nobody.png")),
            DatasetError,
            r"not in the dataset.*nobody\.png",
        ),
        (
            lambda f, val: f[f["image_id"] != val[0]],
            DatasetError,
            r"no prediction for 1 of the 20 'val' images",
        ),
        (
            lambda f, val: f.assign(Mass=f["Mass"].where(f["image_id"] != val[1], np.nan)),
            DatasetError,
            r"'Mass' has missing or non-numeric probabilities for images " + val_placeholder,
        ),
        (
            lambda f, val: f.assign(Mass=f["Mass"] * 3),
            DatasetError,
            r"'Mass' has values outside \[0, 1\]",
        ),
        (lambda f, val: f.assign(Pneumonai=0.2), UnknownClassError, r"Pneumonai"),
        (
            lambda f, val: pd.concat([f, f.iloc[:1]]),
            DatasetError,
            r"several rows score the same image",
        ),
        (lambda f, val: f.rename(columns={"image_id": "study"}), DatasetError, r"no image column"),
        (
            lambda f, val: f.rename(columns={"Edema": "edema", "Mass": "Edema"}),
            DatasetError,
            r"same finding",
        ),
    ],
)
def test_bad_files_are_refused_clearly(setup, tmp_path, change, error, message):
    manifest = setup["manifest"]
    val = manifest.frame.loc[manifest.frame["split"] == "val", "image_id"].tolist()
    path = _write(tmp_path / "p.csv", change(_valid_frame(manifest), val))
    with pytest.raises(error, match=message.replace(val_placeholder, val[1].replace(".", r"\."))):
        read_external_predictions(path, manifest, "val")


def test_paths_and_prob_prefix_are_accepted(setup, tmp_path):
    manifest = setup["manifest"]
    frame = _valid_frame(manifest)
    frame.insert(0, "path", manifest.frame["path"].to_numpy())
    frame = frame.drop(columns="image_id").rename(
        columns={c: f"prob:{c}" for c in NIH14.classes[:3]}
    )
    frame["label:Mass"] = 1.0
    result = read_external_predictions(_write(tmp_path / "p.csv", frame), manifest, "val")
    assert len(result.frame) == 20 and result.mapping.data_classes == NIH14.classes
    assert "label: columns in the file were ignored" in result.notes[-1]
    val = manifest.frame[manifest.frame["split"] == "val"]
    np.testing.assert_array_equal(result.frame["label:Mass"], val["Mass"].to_numpy())
