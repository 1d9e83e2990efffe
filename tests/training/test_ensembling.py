"""Ensembles: a recipe trains its members and combines them into a checkpoint that evaluates,
predicts and explains like any other, and members that do not belong together are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from cxr_core.artifacts.catalog import ensemble_members
from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.inference.explain import explain
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.models.ensemble import Ensemble, build_ensemble
from cxr_core.training import TrainConfig, train
from cxr_core.training.ensembling import combine_checkpoints

MEMBER_SIZES = {"a": 64, "b": 48}


def _member_config(base, name: str, size: int, seed: int, data, extra: dict | None = None) -> dict:
    return {
        "data": {"path": str(data), "val": 0.4, "cache_dir": str(base / "cache"), "cache_size": 64},
        "model": {"name": "small_cnn", "in_chans": 1},
        "preprocess": {"input_size": size},
        "optim": {"batch_size": 8},
        "eval": {"n_boot": 50},
        "epochs": 1,
        "seed": seed,
        "num_workers": 0,
        "device": "cpu",
        "out_dir": str(base / "runs" / name),
        **(extra or {}),
    }


@pytest.fixture(scope="module")
def recipe(kermany_subset, tmp_path_factory) -> dict:
    """Two small_cnn members (64 and 48 px) on 48 real Kermany radiographs, combined by `cxr ensemble`."""
    base = tmp_path_factory.mktemp("ensemble")
    data = kermany_subset(base / "kermany48")
    members = []
    for seed, (name, size) in enumerate(MEMBER_SIZES.items()):
        path = base / f"member_{name}.yaml"
        path.write_text(yaml.safe_dump(_member_config(base, name, size, seed, data)))
        members.append(str(path))
    config = base / "ensemble.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "members": members,
                "eval": {"n_boot": 50, "tta": "hflip"},
                "out_dir": str(base / "ensemble"),
                "provenance": "48 Kermany images",
            }
        )
    )
    assert main(["ensemble", "--config", str(config), "--no-progress"]) == 0
    return {
        "base": base,
        "data": data,
        "config": config,
        "out": base / "ensemble",
        "checkpoint": base / "ensemble" / "model.safetensors",
        "members": [base / "runs" / name / "model.safetensors" for name in MEMBER_SIZES],
    }


def test_card_describes_members_and_cli_evaluate_reproduces_it(recipe, capsys):
    card = load_checkpoint(recipe["checkpoint"]).card
    assert card.architecture == "ensemble" and card.tta == "hflip"
    assert [(m["architecture"], m["input_size"]) for m in card.members] == [
        ("small_cnn", 64),
        ("small_cnn", 48),
    ]
    assert card.preprocess["input_size"] == 64
    assert card.provenance == "48 Kermany images" and card.validation["n_boot"] == 50
    assert [m["checkpoint"] for m in card.training["members"]] == [
        str(p) for p in recipe["members"]
    ]
    assert (recipe["out"] / "config.yaml").is_file()
    members = ensemble_members(card)
    assert list(members["input_size"]) == [64, 48] and list(members["checkpoint"]) == ["a", "b"]
    alone = [load_checkpoint(p).card.validation["macro_auroc"] for p in recipe["members"]]
    assert list(members["val_macro_auroc"]) == alone
    assert ensemble_members(load_checkpoint(recipe["members"][0]).card).empty

    before = json.loads((recipe["out"] / "eval" / "val" / "report.json").read_text())
    assert main(["evaluate", "--checkpoint", str(recipe["checkpoint"]), "--no-progress"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    after = json.loads((recipe["out"] / "eval" / "val" / "report.json").read_text())
    for key in ("macro_auroc", "macro_auroc_ci", "balanced_accuracy", "accuracy", "per_class"):
        assert after["headline"][key] == card.validation[key] == before["headline"][key], key


def test_logits_are_the_mean_of_the_members_at_their_own_input_sizes(recipe):
    ensemble = load_checkpoint(recipe["checkpoint"]).build_model()
    assert isinstance(ensemble, Ensemble) and ensemble.input_sizes == (64, 48)
    image = load_image(sorted((recipe["data"] / "NORMAL").glob("*.jpeg"))[0])
    member_logits = []
    for path in recipe["members"]:
        predictor = Predictor.from_checkpoint(path, device="cpu", tta="none", warmup=False)
        with torch.no_grad():
            member_logits.append(predictor.model(predictor.prepare([image])))
    with torch.no_grad():
        combined = ensemble(
            Predictor.from_checkpoint(recipe["checkpoint"], device="cpu", warmup=False).prepare(
                [image]
            )
        )
    torch.testing.assert_close(combined, torch.stack(member_logits).mean(0), atol=1e-5, rtol=1e-4)
    assert (member_logits[0] - member_logits[1]).abs().max() > 1e-3  # the members really differ


def test_predictor_matches_the_validation_predictions_and_explains(recipe):
    frame, classes = load_predictions(recipe["out"] / "eval" / "val" / "predictions.csv")
    predictor = Predictor.from_checkpoint(recipe["checkpoint"], device="cpu")
    assert predictor.tta == "hflip"
    rows = frame.head(4)
    images = [load_image(p) for p in rows["path"]]
    probs = predictor.predict_probabilities(images)
    np.testing.assert_allclose(probs, rows[[f"prob:{c}" for c in classes]].to_numpy(), atol=1e-5)

    heatmap = explain(predictor, images[0], "Pneumonia")
    assert heatmap.shape == images[0].pixels.shape and np.isfinite(heatmap).all()
    assert heatmap.min() >= 0 and 0.9 < heatmap.max() <= 1.0
    assert len(predictor.target_layers(predictor.model)) == 2
    singles = [
        explain(Predictor.from_checkpoint(p, device="cpu", warmup=False), images[0], "Pneumonia")
        for p in recipe["members"]
    ]
    mean_of_members = np.mean(singles, axis=0)
    assert np.corrcoef(heatmap.ravel(), mean_of_members.ravel())[0, 1] > 0.8


def test_second_run_keeps_the_finished_ensemble_and_reuses_trained_members(
    recipe, capsys, tmp_path
):
    stamps = [p.stat().st_mtime_ns for p in recipe["members"]]
    with pytest.raises(ConfigError, match="already holds a validated model"):
        main_raising(["ensemble", "--config", str(recipe["config"]), "--no-progress"])
    first = load_checkpoint(recipe["checkpoint"]).card.validation
    shutil.move(recipe["out"], tmp_path / "first")
    capsys.readouterr()
    assert main(["ensemble", "--config", str(recipe["config"]), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("already trained") == 2
    assert [p.stat().st_mtime_ns for p in recipe["members"]] == stamps
    again = load_checkpoint(recipe["checkpoint"]).card.validation
    assert again["macro_auroc"] == first["macro_auroc"] and again["per_class"] == first["per_class"]


def test_half_storage_halves_the_file_and_the_card_scores_the_stored_weights(
    recipe, tmp_path, capsys
):
    out = tmp_path / "half"
    report = combine_checkpoints(
        recipe["members"], out, tta="hflip", n_boot=50, half=True, progress=False
    )
    full, half = recipe["checkpoint"].stat().st_size, (out / "model.safetensors").stat().st_size
    assert half < 0.55 * full
    card = load_checkpoint(out / "model.safetensors").card
    assert (
        card.weights_dtype == "float16"
        and card.validation["macro_auroc"] == report.headline["macro_auroc"]
    )
    # float16 rounding moves probabilities a little, not the ranking
    assert (
        abs(
            card.validation["macro_auroc"]
            - load_checkpoint(recipe["checkpoint"]).card.validation["macro_auroc"]
        )
        < 0.02
    )
    assert main(["evaluate", "--checkpoint", str(out / "model.safetensors"), "--no-progress"]) == 0
    after = json.loads((out / "eval" / "val" / "report.json").read_text())
    assert after["headline"]["macro_auroc_ci"] == card.validation["macro_auroc_ci"]


def main_raising(argv: list[str]) -> None:
    from cxr_core.cli.main import build_parser

    args = build_parser().parse_args(argv)
    args.handler(args)


def test_members_that_do_not_belong_together_are_refused(recipe, tmp_path):
    base, data = recipe["base"], recipe["data"]
    # trained on another split of the same images
    other_split = TrainConfig.from_dict(
        _member_config(
            base,
            "other_split",
            48,
            0,
            data,
            {
                "data": {
                    "path": str(data),
                    "val": 0.3,
                    "cache_dir": str(base / "cache"),
                    "cache_size": 64,
                }
            },
        )
    )
    train(other_split, progress=False)
    with pytest.raises(ConfigError, match="other data or another split"):
        combine_checkpoints(
            [recipe["members"][0], base / "runs" / "other_split" / "model.safetensors"],
            tmp_path / "x",
        )
    # normalised differently
    other_norm = TrainConfig.from_dict(
        _member_config(
            base,
            "other_norm",
            48,
            0,
            data,
            {"preprocess": {"input_size": 48, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        )
    )
    train(other_norm, progress=False)
    with pytest.raises(ConfigError, match="normalisation"):
        combine_checkpoints(
            [recipe["members"][0], base / "runs" / "other_norm" / "model.safetensors"],
            tmp_path / "y",
        )
    with pytest.raises(ConfigError, match="itself an ensemble"):
        combine_checkpoints([recipe["checkpoint"], recipe["members"][0]], tmp_path / "z")
    with pytest.raises(ConfigError, match="at least two"):
        combine_checkpoints([recipe["members"][0]], tmp_path / "w")


def test_recipe_errors_and_damaged_member_entries(recipe, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"members": [str(recipe["config"])], "out_dir": "x"}))
    with pytest.raises(ConfigError, match="at least two member configs"):
        main_raising(["ensemble", "--config", str(bad)])
    bad.write_text(yaml.safe_dump({"members": ["a.yaml", "b.yaml"], "eval": {"tta": "spin"}}))
    with pytest.raises(ConfigError, match="eval.tta"):
        main_raising(["ensemble", "--config", str(bad)])
    # a member folder holding a different run than the recipe describes is not silently reused
    changed = yaml.safe_load(
        open(
            load_checkpoint(recipe["checkpoint"]).card.training["config"]["ensemble"]["members"][0]
        )
    )
    changed["seed"] = 7
    moved = tmp_path / "member_changed.yaml"
    moved.write_text(yaml.safe_dump(changed))
    bad.write_text(
        yaml.safe_dump({"members": [str(moved), str(moved)], "out_dir": str(tmp_path / "e")})
    )
    with pytest.raises(ConfigError, match="different config"):
        main_raising(["ensemble", "--config", str(bad)])
    # a segmentation member is refused before anything trains (it would train, not average)
    lungs = {**changed, "task": "segmentation", "model": {"name": "unet_small", "in_chans": 1}}
    lungs["data"] = {**changed["data"], "format": "masks"}
    (tmp_path / "lungs.yaml").write_text(yaml.safe_dump(lungs))
    bad.write_text(
        yaml.safe_dump(
            {"members": [str(moved), str(tmp_path / "lungs.yaml")], "out_dir": str(tmp_path / "f")}
        )
    )
    with pytest.raises(
        ConfigError, match="averages classifiers, but this member has task: segmentation"
    ):
        main_raising(["ensemble", "--config", str(bad)])
    assert not (tmp_path / "f").exists()
    with pytest.raises(CheckpointError, match="upgrade"):
        build_ensemble([{"architecture": "vit_huge", "input_size": 64}], 2)
