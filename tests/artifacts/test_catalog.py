"""Checkpoint discovery, evaluation runs, training logs and review cases on real checkpoint folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, roc_auc_score

from cxr_core.artifacts.catalog import (
    check_folder,
    checkpoint_digest,
    class_counts,
    discover_checkpoints,
    evaluation_data,
    load_eval_run,
    load_training_log,
    per_class_auroc,
    read_entry,
    resolve_image_path,
    review_cases,
    same_evaluation_data,
)
from cxr_core.errors import CheckpointError, UnknownClassError
from cxr_core.models.checkpoint import read_model_card
from tests.checkpoint_fixtures import MULTILABEL_CLASSES, build_catalog


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catalog")
    return {**build_catalog(root), "root": root}


def test_discovery_lists_all_and_keeps_broken_ones(catalog):
    entries = discover_checkpoints([catalog["root"] / "checkpoints"])
    assert [e.name for e in entries] == ["broken", "tiny_a", "tiny_b", "tiny_mc"]
    broken, tiny_a = entries[0], entries[1]
    assert (
        not broken.ok
        and "pickle" in broken.error
        and broken.summary() == {"name": "broken", "error": broken.error}
    )
    assert (
        tiny_a.ok and tiny_a.has_eval and tiny_a.eval_splits == ("val",) and tiny_a.has_training_log
    )
    summary = tiny_a.summary()
    card = read_model_card(catalog["tiny_a"] / "model.safetensors")
    assert summary["architecture"] == "small_cnn" and summary["classes"] == list(MULTILABEL_CLASSES)
    assert summary["val_macro_auroc"] == pytest.approx(card.validation["macro_auroc"])
    assert entries[3].summary()["task"] == "multiclass"


def test_discovery_accepts_checkpoint_dirs_skips_missing_and_dedupes(catalog, tmp_path):
    other = tmp_path / "elsewhere"
    shutil.copytree(catalog["tiny_a"], other / "tiny_a")
    entries = discover_checkpoints(
        [
            catalog["tiny_b"],
            catalog["tiny_b"],
            tmp_path / "missing",
            other,
            catalog["root"] / "checkpoints" / "tiny_a",
        ]
    )
    assert sorted(e.name for e in entries) == [
        "tiny_a (checkpoints)",
        "tiny_a (elsewhere)",
        "tiny_b",
    ]
    assert len({e.key for e in entries}) == 3


def test_check_folder_messages(catalog, tmp_path):
    assert check_folder(catalog["root"] / "checkpoints") == catalog["root"] / "checkpoints"
    with pytest.raises(CheckpointError, match="does not exist"):
        check_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="cxr train --config"):
        check_folder(tmp_path / "empty")


def test_load_eval_run_and_missing_pieces(catalog, tmp_path):
    run = load_eval_run(read_entry(catalog["tiny_a"]), "val")
    assert run.classes == MULTILABEL_CLASSES and len(run.predictions) == 60 and not run.warnings
    assert run.labels().shape == run.scores().shape == (60, 3)
    assert np.isnan(run.labels()[3, 1])
    assert run.report.class_names == list(MULTILABEL_CLASSES)
    with pytest.raises(CheckpointError, match="no evaluation on the 'test' split.*val"):
        load_eval_run(read_entry(catalog["tiny_a"]), "test")
    copy = tmp_path / "copy"
    shutil.copytree(catalog["tiny_a"], copy)
    (copy / "eval" / "val" / "report.json").unlink()
    partial = load_eval_run(read_entry(copy), "val")
    assert partial.report is None and "report.json is missing" in partial.warnings[0]


def test_per_class_auroc_matches_sklearn_and_falls_back_to_card(catalog, tmp_path):
    entry = read_entry(catalog["tiny_a"])
    run = load_eval_run(entry)
    aurocs = per_class_auroc(entry)
    for c, name in enumerate(run.classes):
        known = ~np.isnan(run.labels()[:, c])
        expected = roc_auc_score(run.labels()[known, c], run.scores()[known, c])
        value, low, high = aurocs[name]
        assert value == pytest.approx(expected)
        assert low <= value <= high
    copy = tmp_path / "card_only"
    shutil.copytree(catalog["tiny_a"], copy)
    shutil.rmtree(copy / "eval")
    assert per_class_auroc(read_entry(copy)) == {k: pytest.approx(v) for k, v in aurocs.items()}


def test_training_log_flattened_and_torn_line_skipped(catalog, tmp_path):
    copy = tmp_path / "log"
    shutil.copytree(catalog["tiny_a"], copy)
    with (copy / "training_log.jsonl").open("a") as handle:
        handle.write('{"epoch": 4, "train_lo')  # a run still writing
    log = load_training_log(read_entry(copy))
    assert list(log["epoch"]) == [1, 2, 3]
    assert log["val.macro_auroc"].round(3).tolist() == [0.65, 0.7, 0.75]


def test_review_cases_outcomes_match_sklearn(catalog):
    run = load_eval_run(read_entry(catalog["tiny_a"]))
    cases = review_cases(run, "Cardiomegaly", 0.45)
    known = ~np.isnan(run.labels()[:, 1])
    assert len(cases) == int(known.sum()) == 59
    tn, fp, fn, tp = confusion_matrix(
        run.labels()[known, 1], run.scores()[known, 1] >= 0.45
    ).ravel()
    counts = cases["outcome"].value_counts()
    assert (counts.get("TP", 0), counts.get("FP", 0), counts.get("FN", 0), counts.get("TN", 0)) == (
        tp,
        fp,
        fn,
        tn,
    )
    row = cases.iloc[0]
    assert run.predictions.iloc[int(row["row"])]["image_id"] == row["image_id"]
    assert row["margin"] == pytest.approx(row["prob"] - 0.45)
    with pytest.raises(UnknownClassError, match="Pneumonia"):
        review_cases(run, "Pneumonia", 0.5)


def test_review_cases_multiclass_uses_argmax(catalog):
    run = load_eval_run(read_entry(catalog["tiny_mc"]))
    cases = review_cases(run, "Pneumonia", 0.99, multilabel=False)
    predicted = np.argmax(run.scores(), axis=1) == 1
    assert cases["predicted"].tolist() == predicted.tolist()


def test_resolve_image_path(catalog, tmp_path):
    data = catalog["root"] / "data"
    image = data / "images" / "img_000.png"
    assert resolve_image_path(str(image), "img_000.png", []) == image
    assert resolve_image_path("images/img_000.png", "img_000.png", []) is None
    assert resolve_image_path("images/img_000.png", "img_000.png", [data]) == image
    assert (
        resolve_image_path("/other/machine/nih/images/img_000.png", "x", [tmp_path, data]) == image
    )
    assert resolve_image_path("", "img_000.png", [data / "images"]) == image
    assert resolve_image_path("images/missing.png", "missing.png", [data]) is None


def test_checkpoint_digest_is_the_recorded_weights_digest_else_the_file_hash(catalog, tmp_path):
    import hashlib

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    model = catalog["tiny_a"] / "model.safetensors"
    with safe_open(str(model), "pt") as handle:
        recorded = handle.metadata()["cxr_weights_sha256"]
    assert checkpoint_digest(model) == recorded and len(recorded) == 64
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.ones(2)}, str(bare))
    assert checkpoint_digest(bare) == hashlib.sha256(bare.read_bytes()).hexdigest()
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="header"):
        checkpoint_digest(tmp_path / "junk.safetensors")


def test_class_counts_and_comparable_evaluations(catalog):
    entry = read_entry(catalog["tiny_a"])
    counts = class_counts(entry.card)
    assert list(counts.columns) == [
        "class",
        "train_positives",
        "val_positives",
        "val_negatives",
        "val_auroc",
        "low_count",
    ]
    assert list(counts["class"]) == list(entry.card.classes)
    from dataclasses import replace

    def with_data(**data):
        return replace(entry, card=replace(entry.card, data=data))

    nih = with_data(source="NIH", manifest_fingerprint="f5fb", split_rule={"seed": 0, "val": 0.15})
    assert same_evaluation_data(
        nih,
        with_data(
            source="NIH copy", manifest_fingerprint="f5fb", split_rule={"val": 0.15, "seed": 0}
        ),
    )
    assert not same_evaluation_data(
        nih, with_data(source="NIH", manifest_fingerprint="f5fb", split_rule={"seed": 1})
    )
    assert not same_evaluation_data(nih, with_data(source="Kermany", manifest_fingerprint="f243"))
    assert not same_evaluation_data(
        with_data(source="a"), with_data(source="a")
    )  # unknown data: not comparable
    assert evaluation_data(nih)[0] == "NIH"
