"""``cxr evaluate`` reproduces the model card, matches the Predictor, and says when data changed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.errors import DatasetError
from cxr_core.evaluation.run import evaluate_checkpoint
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import load_checkpoint, save_checkpoint
from cxr_core.training import TrainConfig, train
from cxr_core.training.data_setup import build_manifest


@pytest.fixture(scope="module")
def trained(kermany_subset, tmp_path_factory) -> dict:
    """One epoch of small_cnn on 48 real Kermany radiographs (24 per class), 64 px, scored with flip TTA."""
    base = tmp_path_factory.mktemp("evaluation")
    data = kermany_subset(base / "kermany48")
    config = TrainConfig.from_dict(
        {
            "data": {
                "path": str(data),
                "val": 0.4,
                "cache_dir": str(base / "cache"),
                "cache_size": 64,
            },
            "model": {"name": "small_cnn", "in_chans": 1},
            "preprocess": {"input_size": 64},
            "optim": {"batch_size": 8},
            "eval": {"n_boot": 100, "tta": "hflip"},
            "epochs": 1,
            "num_workers": 0,
            "device": "cpu",
            "out_dir": str(base / "run"),
        }
    )
    train(config, progress=False)
    run = base / "run"
    saved = base / "training_eval"
    shutil.copytree(run / "eval" / "val", saved)
    return {
        "config": config,
        "data": data,
        "run": run,
        "training_eval": saved,
        "checkpoint": run / "model.safetensors",
    }


def test_cli_reproduces_the_model_card(trained, capsys):
    assert main(["evaluate", "--checkpoint", str(trained["checkpoint"]), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "WARNING" not in captured.err
    assert "balanced accuracy" in captured.out

    card = load_checkpoint(trained["checkpoint"]).card
    report = json.loads((trained["run"] / "eval" / "val" / "report.json").read_text())
    for key in (
        "macro_auroc",
        "macro_auroc_ci",
        "balanced_accuracy",
        "accuracy",
        "per_class",
        "n_images",
        "n_patients",
    ):
        assert report["headline"][key] == card.validation[key], key
    before = pd.read_csv(trained["training_eval"] / "predictions.csv")
    after = pd.read_csv(trained["run"] / "eval" / "val" / "predictions.csv")
    pd.testing.assert_frame_equal(before, after)


def test_probabilities_equal_the_predictor(trained):
    """Both score with the card's test-time augmentation, so a user gets the card's numbers."""
    frame, classes = load_predictions(trained["training_eval"] / "predictions.csv")
    assert load_checkpoint(trained["checkpoint"]).card.tta == "hflip"
    predictor = Predictor.from_checkpoint(trained["checkpoint"], device="cpu")
    assert predictor.tta == "hflip"
    rows = frame.head(6)
    images = [load_image(p) for p in rows["path"]]
    predictions = predictor.predict(images)
    for (_, row), prediction in zip(rows.iterrows(), predictions):
        for c in classes:
            assert prediction.probabilities[c] == pytest.approx(row[f"prob:{c}"], abs=1e-5)
    plain = Predictor.from_checkpoint(
        trained["checkpoint"], device="cpu", tta="none"
    ).predict_probabilities(images)
    assert np.abs(plain - predictor.predict_probabilities(images)).max() > 1e-4


def test_changed_data_warns_and_keeps_the_training_evaluation(trained, tmp_path, capsys):
    changed = tmp_path / "changed"
    shutil.copytree(trained["data"], changed)
    extra = next((changed / "NORMAL").glob("*.jpeg"))
    shutil.copy(extra, changed / "NORMAL" / "zz_extra_copy.jpeg")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(trained["checkpoint"]),
                "--data",
                str(changed),
                "--no-progress",
                "--n-boot",
                "20",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "WARNING" in err and "fingerprint" in err
    written = [p for p in (trained["run"] / "eval").iterdir() if p.name.startswith("val-data-")]
    assert len(written) == 1 and (written[0] / "report.json").is_file()
    before = pd.read_csv(trained["training_eval"] / "predictions.csv")
    pd.testing.assert_frame_equal(
        before, pd.read_csv(trained["run"] / "eval" / "val" / "predictions.csv")
    )


def test_a_moved_project_finds_its_data_and_reproduces_the_card(trained, tmp_path, capsys):
    """A clone next to its data (the bundled models beside ../shared) needs no --data."""
    moved = tmp_path / "clone"
    shutil.copytree(trained["run"], moved / "run")
    shutil.copytree(trained["data"], moved / trained["data"].name)
    hidden = trained["data"].with_name("hidden")
    trained["data"].rename(hidden)  # the card's absolute data path no longer exists
    try:
        code = main(
            ["evaluate", "--checkpoint", str(moved / "run" / "model.safetensors"), "--no-progress"]
        )
        refused = main(["evaluate", "--checkpoint", str(trained["checkpoint"]), "--no-progress"])
    finally:
        hidden.rename(trained["data"])
    captured = capsys.readouterr()
    assert code == 0 and "WARNING" not in captured.err
    assert f"using {moved / trained['data'].name}" in captured.err  # says which data it scored
    assert refused == 2 and "not on this machine" in captured.err and "--data" in captured.err
    report = json.loads((moved / "run" / "eval" / "val" / "report.json").read_text())
    card = load_checkpoint(trained["checkpoint"]).card
    assert report["headline"]["macro_auroc_ci"] == card.validation["macro_auroc_ci"]
    frame, _ = load_predictions(moved / "run" / "eval" / "val" / "predictions.csv")
    assert all(p.startswith(str(moved / trained["data"].name)) for p in frame["path"])
    assert any((moved / "cache").iterdir())  # the image cache moved along too


def test_library_evaluation_of_other_split_and_refusals(trained, tmp_path):
    manifest = build_manifest(trained["config"].data)
    report = evaluate_checkpoint(
        trained["checkpoint"],
        manifest,
        "train",
        tmp_path / "train_eval",
        n_boot=0,
        cache_dir=trained["config"].data.cache_dir,
        progress=False,
    )
    frame, classes = load_predictions(tmp_path / "train_eval" / "predictions.csv")
    assert len(frame) == report.n_cases == int((manifest.frame["split"] == "train").sum())
    assert report.headline["macro_auroc_ci"] is None  # n_boot=0: no interval claimed
    assert np.allclose(frame[[f"prob:{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(DatasetError, match="test"):
        evaluate_checkpoint(
            trained["checkpoint"], manifest, "test", tmp_path / "t", n_boot=0, progress=False
        )

    bad = tmp_path / "bad.csv"
    bad.write_text("image_id,prob:A\nx,0.5\n")
    with pytest.raises(DatasetError, match="label:A"):
        load_predictions(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        load_predictions(tmp_path / "missing.csv")


def test_label_space_mismatch_is_refused(trained, tmp_path):
    other = tmp_path / "three"
    for name in ("NORMAL", "PNEUMONIA", "COVID"):
        shutil.copytree(trained["data"] / ("NORMAL" if name == "COVID" else name), other / name)
    config = trained["config"].data
    manifest = build_manifest(type(config)(**{**config.__dict__, "path": str(other)}))
    with pytest.raises(DatasetError, match="label space"):
        evaluate_checkpoint(
            trained["checkpoint"], manifest, "val", tmp_path / "out", n_boot=0, progress=False
        )


def test_cli_compare_scores_both_models_on_the_same_images(trained, tmp_path, capsys):
    """`cxr compare`: a second model (the first with its weights perturbed) against the first."""
    ckpt = load_checkpoint(trained["checkpoint"])
    generator = torch.Generator().manual_seed(0)
    noisy = {
        k: v + 0.3 * v.std() * torch.randn(v.shape, generator=generator)
        if v.is_floating_point()
        else v
        for k, v in ckpt.state_dict.items()
    }
    other = tmp_path / "perturbed" / "model.safetensors"
    other.parent.mkdir()
    save_checkpoint(other, noisy, ckpt.card)
    out = tmp_path / "cmp"
    args = ["compare", "--checkpoint", str(trained["checkpoint"]), "--checkpoint", str(other)]
    assert main([*args, "--out", str(out), "--n-boot", "50", "--no-progress"]) == 0
    assert "1 = run, 2 = perturbed" in capsys.readouterr().out
    report = json.loads((out / "comparison.json").read_text())
    first, classes = load_predictions(out / "models" / "run" / "predictions.csv")
    second, _ = load_predictions(out / "models" / "perturbed" / "predictions.csv")
    assert list(first["image_id"]) == list(second["image_id"])  # one split of one dataset
    for name in classes:
        y = first[f"label:{name}"]
        delta = roc_auc_score(y, first[f"prob:{name}"]) - roc_auc_score(y, second[f"prob:{name}"])
        assert report["per_class"][name]["delta_auroc"] == pytest.approx(delta, abs=1e-12)
        assert report["per_class"][name]["delong_p"] is not None
    assert (out / "comparison.csv").is_file()
    assert main(["compare", "--checkpoint", str(other), "--out", str(out)]) == 2
    assert "exactly two --checkpoint" in capsys.readouterr().err
