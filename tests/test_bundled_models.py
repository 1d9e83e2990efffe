"""The bundled checkpoints: small, safe to load, documented, and their model cards reproducible.

These are what a newcomer sees first, so the numbers in their cards must be the numbers
``cxr evaluate`` gets on the same validation images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core.artifacts.catalog import resolve_image_path
from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import load_checkpoint

BUNDLED = Path(__file__).resolve().parents[1] / "checkpoints"
# bundled model -> its training data under ../shared/data
MODELS = {
    "nih14": "nih14",
    "pneumonia": "pneumonia/chest_xray",
    "pneumonia_type": "pneumonia/chest_xray",
}
MAX_BYTES = 50 * 1024 * 1024


def _model(name: str) -> Path:
    path = BUNDLED / name / "model.safetensors"
    assert path.is_file(), f"bundled checkpoint {path} is missing"
    return path


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bundled_checkpoint_is_small_documented_and_loads(name):
    path = _model(name)
    assert path.stat().st_size <= MAX_BYTES
    card = load_checkpoint(path).card
    assert card.provenance and card.intended_use
    if card.label_space["task"] == "multilabel":
        assert set(card.thresholds) == set(card.classes)
    else:
        assert card.threshold_method == "argmax"
    val = card.data["splits"]["val"]
    assert set(val["positives"]) == set(card.classes) and val["patients"] > 0
    report = json.loads((path.parent / "eval" / "val" / "report.json").read_text())
    assert set(report["per_class"]) == set(card.classes)
    assert report["headline"]["macro_auroc"] == card.validation["macro_auroc"]
    if card.members:  # an ensemble: each member's own training is summarised in the card
        assert all(m["wall_time_s"] > 0 and m["val_macro_auroc"] for m in card.training["members"])
    else:
        assert (path.parent / "training_log.jsonl").is_file()
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert list(predictor.classes) == list(card.classes)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_evaluate_reproduces_the_model_card(name, shared_data, tmp_path, capsys):
    path = _model(name)
    card = load_checkpoint(path).card
    out = tmp_path / "eval"
    beside_the_clone = (
        shared_data.resolve() == (BUNDLED.parent.parent / "shared" / "data").resolve()
    )
    data = (
        [] if beside_the_clone else ["--data", str(shared_data / MODELS[name])]
    )  # CXR_SHARED_DATA elsewhere
    code = main(
        [
            "evaluate",
            "--checkpoint",
            str(path),
            "--split",
            "val",
            *data,
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "WARNING" not in capsys.readouterr().err  # same files, labels and split as the card's
    report = json.loads((out / "report.json").read_text())
    for key in ("macro_auroc", "macro_auroc_ci", "n_images", "n_patients"):
        assert report["headline"][key] == pytest.approx(card.validation[key], abs=1e-6), key
    shipped, classes = load_predictions(path.parent / "eval" / "val" / "predictions.csv")
    fresh, _ = load_predictions(out / "predictions.csv")
    near = _cases_near_a_decision(fresh, classes, report)
    for cls, expected in card.validation["per_class"].items():
        got = report["headline"]["per_class"][cls]
        for metric in ("auroc", "auroc_ci", "n_pos", "n_neg"):
            assert got[metric] == pytest.approx(expected[metric], abs=1e-6), (cls, metric)
        # A case within TOLERANCE of its threshold may land on either side on another CPU; no other may.
        n_near_pos, n_near_neg = near[cls]
        for metric, n_class, n_near in (
            ("sensitivity", "n_pos", n_near_pos),
            ("specificity", "n_neg", n_near_neg),
        ):
            if got[metric] is None or expected[metric] is None:
                assert got[metric] == expected[metric], (cls, metric)
                continue
            flipped = abs(got[metric] - expected[metric]) * expected[n_class]
            assert flipped <= n_near + 1e-6, (cls, metric, got[metric], expected[metric])
    pd.testing.assert_series_equal(shipped["image_id"], fresh["image_id"])
    probs = [f"prob:{c}" for c in classes]
    np.testing.assert_allclose(fresh[probs].to_numpy(), shipped[probs].to_numpy(), atol=1e-5)


TOLERANCE = 1e-4


def _cases_near_a_decision(
    predictions: pd.DataFrame, classes: list[str], report: dict
) -> dict[str, tuple[int, int]]:
    """Per class: (positives, negatives) whose call could flip under last-bit differences.

    Multilabel: score within TOLERANCE of any threshold that judged a case (the reported one
    and, for cross-fitted operating points, every fold's). Multiclass: a top-two tie within it.
    """
    labels = predictions[[f"label:{c}" for c in classes]].to_numpy(dtype=float)
    probs = predictions[[f"prob:{c}" for c in classes]].to_numpy(dtype=float)
    out = {}
    if report["task"] == "multiclass":
        top2 = np.sort(probs, axis=1)[:, -2:]
        tied = (top2[:, 1] - top2[:, 0]) < TOLERANCE
        for c, name in enumerate(classes):
            out[name] = (
                int(np.sum(tied & (labels[:, c] == 1))),
                int(np.sum(tied & (labels[:, c] == 0))),
            )
        return out
    for c, name in enumerate(classes):
        judged = [report["per_class"][name]["threshold"]]
        if "operating_point" in report:
            judged += report["operating_point"]["per_class"][name]["fold_thresholds"]
        close = np.zeros(len(probs), dtype=bool)
        for t in judged:
            if t is not None:
                close |= np.abs(probs[:, c] - t) < TOLERANCE
        out[name] = (
            int(np.sum(close & (labels[:, c] == 1))),
            int(np.sum(close & (labels[:, c] == 0))),
        )
    return out


def test_near_threshold_cases_are_the_only_ones_1e6_noise_moves():
    """The shipped nih14 predictions, perturbed by 1e-6: calls change only within TOLERANCE."""
    path = _model("nih14")
    frame, classes = load_predictions(path.parent / "eval" / "val" / "predictions.csv")
    report = json.loads((path.parent / "eval" / "val" / "report.json").read_text())
    noisy = frame.copy()
    columns = [f"prob:{c}" for c in classes]
    noisy[columns] = frame[columns].to_numpy() + np.random.default_rng(0).choice(
        [-1e-6, 1e-6], (len(frame), len(classes))
    )
    near = _cases_near_a_decision(frame, classes, report)
    for name in classes:
        t = report["per_class"][name]["threshold"]
        close = np.abs(frame[f"prob:{name}"].to_numpy() - t) < TOLERANCE
        flips = (frame[f"prob:{name}"].to_numpy() >= t) != (noisy[f"prob:{name}"].to_numpy() >= t)
        assert not np.any(flips & ~close), name
        assert int(close.sum()) <= sum(near[name]), (
            name
        )  # the reported threshold is one of those that judged cases


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predictor_matches_the_shipped_validation_predictions(name, shared_data):
    path = _model(name)
    shipped, classes = load_predictions(path.parent / "eval" / "val" / "predictions.csv")
    rows = shipped.head(4)
    root = shared_data / MODELS[name]
    images = [
        load_image(resolve_image_path(p, i, [root])) for p, i in zip(rows["path"], rows["image_id"])
    ]
    predictions = Predictor.from_checkpoint(path, device="cpu").predict(images)
    for (_, row), prediction in zip(rows.iterrows(), predictions):
        for c in classes:
            assert prediction.probabilities[c] == pytest.approx(row[f"prob:{c}"], abs=1e-5)


def test_nih14_card_shows_per_class_counts_and_flags_the_rare_finding():
    from cxr_core.artifacts.catalog import class_counts

    card = load_checkpoint(_model("nih14")).card
    table = class_counts(card).set_index("class")
    assert list(table.index) == list(card.classes)
    assert table.loc["Hernia", "low_count"] and table.loc["Hernia", "val_positives"] < 10
    assert not table.loc["Pleural Effusion", "low_count"]
    train = card.data["splits"]["train"]["positives"]
    assert all(table.loc[c, "train_positives"] == train[c] for c in card.classes)
    assert table["val_positives"].sum() == sum(
        card.validation["per_class"][c]["n_pos"] for c in card.classes
    )
