"""Out-of-sample operating points, calibration and subgroups of a real (tiny) multilabel run.

small_cnn trained for one epoch on 300 real NIH ChestX-ray14 films at 64 px: its numbers are
poor, but every number in its card and report must be computed the way they claim to be.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from cxr_core.artifacts.run_dir import load_predictions, split_arrays
from cxr_core.artifacts.thresholds_store import ThresholdStore
from cxr_core.cli.main import main
from cxr_core.data.cache import ImageCache
from cxr_core.data.imaging import load_image
from cxr_core.evaluation.run import evaluate_checkpoint, predict_split, refresh_card
from cxr_core.inference.predictor import Predictor
from cxr_core.metrics import (
    age_band,
    crossfit_temperature,
    crossfit_thresholds,
    fit_temperature,
    select_thresholds,
)
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.training import TrainConfig, train
from cxr_core.training.data_setup import build_manifest

N_IMAGES = 300
REPORT_KEYS = ("thresholds_from", "threshold_rule", "calibration_change", "subgroups", "headline")


@pytest.fixture(scope="module")
def nih_run(nih14_root, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("nih_run")
    data = base / "nih300"
    (data / "images").mkdir(parents=True)
    entries = pd.read_csv(nih14_root / "Data_Entry_2017.csv", dtype=str)
    names = sorted(p.name for p in (nih14_root / "images").glob("*.png"))[:N_IMAGES]
    entries[entries["Image Index"].isin(names)].to_csv(data / "Data_Entry_2017.csv", index=False)
    for name in names:
        shutil.copy(nih14_root / "images" / name, data / "images" / name)
    config = TrainConfig.from_dict(
        {
            "data": {
                "path": str(data),
                "val": 0.5,
                "cache_dir": str(base / "cache"),
                "cache_size": 64,
            },
            "model": {"name": "small_cnn", "in_chans": 1},
            "preprocess": {"input_size": 64},
            "optim": {"batch_size": 16},
            "eval": {"n_boot": 40, "tta": "none"},
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
    manifest = build_manifest(config.data)
    return {
        "config": config,
        "run": run,
        "checkpoint": run / "model.safetensors",
        "training_eval": saved,
        "manifest": manifest,
    }


def _report(folder) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_card_operating_point_is_cross_fitted_out_of_fold(nih_run):
    card = load_checkpoint(nih_run["checkpoint"]).card
    report = _report(nih_run["training_eval"])
    for key in REPORT_KEYS:
        assert key in report, key
    assert report["thresholds_from"] == card.validation["thresholds_from"] == "val:crossfit-5"
    assert card.threshold_method == report["threshold_rule"] == "specificity=0.9"

    frame, classes = load_predictions(nih_run["training_eval"] / "predictions.csv")
    labels, probs = split_arrays(frame, classes)
    fit = crossfit_thresholds(
        labels,
        probs,
        frame["patient_id"].astype(str).to_numpy(),
        "specificity=0.9",
        n_folds=5,
        seed=card.validation["seed"],
    )
    for k in range(
        5
    ):  # every case is judged by thresholds fitted on the other patients' folds only
        held = fit.folds == k
        assert not set(frame["patient_id"][held]) & set(frame["patient_id"][~held])
        np.testing.assert_array_equal(
            fit.case_thresholds[held][0],
            select_thresholds(labels[~held], probs[~held], "specificity", 0.9),
        )
    for c, name in enumerate(classes):
        entry = report["per_class"][name]
        for metric in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            assert entry[metric] == pytest.approx(fit.metrics[metric][c], nan_ok=True), (
                name,
                metric,
            )
        assert entry["tp"] == (
            None if np.isnan(fit.metrics["tp"][c]) else int(fit.metrics["tp"][c])
        )
        assert card.thresholds[name] == pytest.approx(fit.final_thresholds[c])
        assert card.validation["per_class"][name]["sensitivity"] == entry["sensitivity"]
    # max-F1 on all validation cases is kept as a named preset, not as the default
    preset = ThresholdStore(nih_run["checkpoint"].parent, classes, card.thresholds).load("max_f1")
    expected = select_thresholds(labels, probs, "max_f1")
    for c, name in enumerate(classes):
        if np.isfinite(expected[c]):
            assert preset.thresholds[name] == pytest.approx(np.clip(expected[c], 0, 1))


def test_temperature_is_fitted_out_of_fold_and_applied_like_the_predictor(nih_run):
    ckpt = load_checkpoint(nih_run["checkpoint"])
    card = ckpt.card
    assert card.calibration["method"] == "temperature" and card.calibration["fitted_on"] == "val"
    val = nih_run["manifest"].split("val")
    cache = ImageCache.build(
        val, nih_run["config"].data.cache_dir, ckpt.preprocess.cache_size, progress=False
    )
    raw = predict_split(ckpt, val, cache, device="cpu", progress=False, calibrated=False)
    labels, raw_probs = split_arrays(raw, card.classes)
    fitted = fit_temperature(labels, raw_probs, "multilabel")
    np.testing.assert_allclose(
        card.temperature(), np.where(np.isfinite(fitted), fitted, 1.0), rtol=1e-9
    )
    assert (
        np.abs(np.log(card.temperature())).max() > 0.01
    )  # calibration actually changes the probabilities

    report = _report(nih_run["training_eval"])
    change = report["calibration_change"]
    fit = crossfit_temperature(
        labels,
        raw_probs,
        raw["patient_id"].astype(str).to_numpy(),
        "multilabel",
        n_folds=5,
        seed=card.validation["seed"],
    )
    assert change["source"] == "val:crossfit-5" and change["temperature"] == card.temperature()
    for c, name in enumerate(card.classes):
        for when, values in (("before", fit.before), ("after", fit.after)):
            for metric in ("ece", "brier"):
                assert change["per_class"][name][f"{metric}_{when}"] == pytest.approx(
                    values[metric][c], nan_ok=True
                )
    assert change["macro"]["before"]["ece"] == pytest.approx(np.nanmean(fit.before["ece"]))
    assert card.validation["macro_ece_after"] == change["macro"]["after"]["ece"]

    # predictions.csv holds calibrated probabilities, the ones the Predictor returns
    frame, classes = load_predictions(nih_run["training_eval"] / "predictions.csv")
    rows = frame.head(5)
    got = Predictor.from_checkpoint(nih_run["checkpoint"], device="cpu").predict_probabilities(
        [load_image(p) for p in rows["path"]]
    )
    np.testing.assert_allclose(got, rows[[f"prob:{c}" for c in classes]].to_numpy(), atol=1e-6)
    assert np.abs(got - raw_probs[:5]).max() > 1e-3


def test_subgroups_match_scikit_learn(nih_run):
    report = _report(nih_run["training_eval"])
    assert report["subgroups"]["keys"] == ["view", "sex", "age"]
    frame, classes = load_predictions(nih_run["training_eval"] / "predictions.csv")
    val = nih_run["manifest"].split("val").frame.set_index("image_id")
    frame["sex"] = val.loc[frame["image_id"], "sex"].to_numpy()
    frame["age"] = age_band(val.loc[frame["image_id"], "age"].to_numpy())
    checked = 0
    for key in ("sex", "age"):
        section = report["subgroups"]["by"][key]
        for value, group in section["subgroups"].items():
            rows = frame[frame[key] == value]
            assert group["n"] == len(rows) and group["n_patients"] == rows["patient_id"].nunique()
            for name, entry in group["per_class"].items():
                y, p = rows[f"label:{name}"].to_numpy(), rows[f"prob:{name}"].to_numpy()
                t = report["per_class"][name]["threshold"]
                if 0 < y.sum() < len(y):
                    assert entry["auroc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
                    assert entry["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= t))
                    assert entry["specificity"] == pytest.approx(np.mean(p[y == 0] < t))
                    overall = section["overall"]["per_class"][name]["auroc"]
                    assert entry["auroc_gap"] == pytest.approx(entry["auroc"] - overall)
                    assert entry["auroc_gap_flag"] == (
                        entry["auroc_gap_ci"][0] > 0 or entry["auroc_gap_ci"][1] < 0
                    )
                    checked += 1
    assert checked > 20


def test_cli_evaluate_reproduces_the_card_and_other_splits_use_its_thresholds(
    nih_run, tmp_path, capsys
):
    ckpt = nih_run["checkpoint"]
    card = load_checkpoint(ckpt).card
    assert (
        main(
            ["evaluate", "--checkpoint", str(ckpt), "--out", str(tmp_path / "val"), "--no-progress"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "thresholds from: val:crossfit-5 (specificity=0.9)" in out and "PPV [CI]" in out
    report = _report(tmp_path / "val")
    assert report["headline"] == {
        k: v for k, v in card.validation.items() if k in report["headline"]
    }
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--split",
                "train",
                "--by",
                "View Position",
                "--by",
                "sex",
                "--out",
                str(tmp_path / "train"),
                "--n-boot",
                "20",
                "--no-progress",
            ]
        )
        == 0
    )
    train_report = _report(tmp_path / "train")
    assert (
        train_report["thresholds_from"] == "card"
        and train_report["calibration_change"]["source"] == "card"
    )
    assert list(train_report["subgroups"]["by"]) == ["view", "sex"]
    frame, classes = load_predictions(tmp_path / "train" / "predictions.csv")
    for name in classes:
        y, p = frame[f"label:{name}"].to_numpy(), frame[f"prob:{name}"].to_numpy()
        assert train_report["per_class"][name]["tp"] == int(
            np.sum((y == 1) & (p >= card.thresholds[name]))
        )
    capsys.readouterr()
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--thresholds",
                "max_f1",
                "--out",
                str(tmp_path / "set"),
                "--n-boot",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert _report(tmp_path / "set")["thresholds_from"] == "val:crossfit-5"  # a rule: cross-fitted
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(ckpt),
                "--thresholds",
                "no such set",
                "--n-boot",
                "0",
                "--out",
                str(tmp_path / "x"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "neither a threshold rule" in capsys.readouterr().err


def test_saved_set_is_used_as_is(nih_run, tmp_path):
    card = load_checkpoint(nih_run["checkpoint"]).card
    report = evaluate_checkpoint(
        nih_run["checkpoint"],
        nih_run["manifest"],
        "val",
        tmp_path,
        n_boot=0,
        cache_dir=nih_run["config"].data.cache_dir,
        progress=False,
        thresholds="card",
    )
    assert report.thresholds_from == "card"
    frame, classes = load_predictions(tmp_path / "predictions.csv")
    for name in classes:
        y, p = frame[f"label:{name}"].to_numpy(), frame[f"prob:{name}"].to_numpy()
        assert report.per_class[name].fp == int(np.sum((y == 0) & (p >= card.thresholds[name])))


def test_card_counts_survive_1e6_noise(nih_run):
    """Thresholds lie between observed scores: noise of 1e-6 moves no case across any of them."""
    frame, classes = load_predictions(nih_run["training_eval"] / "predictions.csv")
    report = _report(nih_run["training_eval"])
    _, probs = split_arrays(frame, classes)
    noisy = probs + np.random.default_rng(0).choice([-1e-6, 1e-6], size=probs.shape)
    n_near = n_decisions = 0
    for c, name in enumerate(classes):
        op = report["operating_point"]["per_class"][name]
        for t in [op["threshold"], *op["fold_thresholds"]]:
            if t is None:
                continue
            assert not np.any(probs[:, c] == t)  # never an observed score
            near = np.abs(probs[:, c] - t) < 1e-4  # the only cases allowed to flip
            flips = (probs[:, c] >= t) != (noisy[:, c] >= t)
            assert not np.any(flips & ~near), (name, t)
            n_near += int(near.sum())
            n_decisions += len(near)
    assert (
        n_near < 0.01 * n_decisions
    )  # a one-epoch model crowds its scores, still few are that close


def test_refresh_restamps_the_card_and_keeps_the_weights(nih_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(nih_run["run"], copy)
    target = copy / "model.safetensors"
    before = load_file(target)
    report = refresh_card(
        target,
        nih_run["manifest"],
        n_boot=20,
        seed=0,
        cache_dir=nih_run["config"].data.cache_dir,
        progress=False,
        operating_point="youden",
        subgroups=["sex"],
    )
    after = load_file(target)
    assert before.keys() == after.keys() and all(
        np.array_equal(before[k], after[k]) for k in before
    )
    card = load_checkpoint(target).card
    assert (
        card.threshold_method == "youden" and card.validation["thresholds_from"] == "val:crossfit-5"
    )
    written = _report(copy / "eval" / "val")
    assert written["threshold_rule"] == "youden" and list(written["subgroups"]["by"]) == ["sex"]
    assert (
        written["headline"]["macro_auroc"]
        == report.headline["macro_auroc"]
        == card.validation["macro_auroc"]
    )
    assert "max_f1" in ThresholdStore(copy, card.classes).names()
    # the CLI re-stamps too and reproduces the same card on the same data
    assert (
        main(
            [
                "card",
                "refresh",
                "--checkpoint",
                str(target),
                "--operating-point",
                "youden",
                "--by",
                "sex",
                "--n-boot",
                "20",
                "--seed",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    again = load_checkpoint(target).card
    assert (
        again.thresholds == card.thresholds
        and again.calibration["temperature"] == card.calibration["temperature"]
    )


def test_cli_evaluate_against_a_second_truth(nih_run, tmp_path, capsys):
    """`cxr evaluate --truth`: the same predictions and calls scored against relabelled Effusion."""
    data = nih_run["config"].data
    experts = tmp_path / "experts"
    experts.mkdir()
    (experts / "images").symlink_to(Path(data.path) / "images")
    entries = pd.read_csv(Path(data.path) / "Data_Entry_2017.csv", dtype=str)
    val = set(nih_run["manifest"].split("val").frame["image_id"])
    flip = entries["Image Index"].isin(sorted(val)[:15])

    def relabel(findings: str) -> str:  # Effusion flipped, every other finding kept
        found = [f for f in findings.split("|") if f != "No Finding"]
        found = (
            [f for f in found if f != "Effusion"] if "Effusion" in found else found + ["Effusion"]
        )
        return "|".join(found) or "No Finding"

    entries.loc[flip, "Finding Labels"] = entries.loc[flip, "Finding Labels"].map(relabel)
    entries.to_csv(experts / "Data_Entry_2017.csv", index=False)
    out = tmp_path / "eval"
    args = ["evaluate", "--checkpoint", str(nih_run["checkpoint"]), "--out", str(out)]
    assert main([*args, "--truth", str(experts), "--n-boot", "30", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "experts vs dataset labels" in printed
    written = json.loads((out / "truth.json").read_text())
    effusion = written["per_class"]["Pleural Effusion"]
    assert effusion["n_disagree"] == 15 and effusion["n_images"] == len(val)
    frame, _ = load_predictions(out / "predictions.csv")
    assert effusion["auroc_primary"] == pytest.approx(
        roc_auc_score(frame["label:Pleural Effusion"], frame["prob:Pleural Effusion"])
    )
    assert written["per_class"]["Mass"]["n_disagree"] == 0  # other findings were not relabelled
