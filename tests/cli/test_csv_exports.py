"""Every CLI command that writes a CSV, on files and a reader with hostile names, read back.

Names that a spreadsheet would run as formulas (a file ``=1+1_NORMAL_4.jpeg``, a reader
``=cmd|' /C calc'!A0``) must reach every table as inert text and come back exactly from the
project's own reader. Walked here: ``train`` (eval/val/predictions.csv), ``evaluate``,
``card refresh``, ``predict``, ``evaluate --predictions``, ``review export``,
``review agreement --csv``, ``explain-eval --out`` and ``evaluate`` of a segmentation model
(scores.csv).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cxr_core.artifacts.prediction_table import read_prediction_table
from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.cli.main import main
from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint
from cxr_core.utils.csv_safe import read_table

pytestmark = pytest.mark.slow

READER = "=cmd|' /C calc'!A0"
OTHER_READER = "@SUM(A1:A9)"
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
REPO = Path(__file__).resolve().parents[2]


def hostile_name(i: int, label: str, suffix: str) -> str:
    prefixes = ("=1+1", "+cmd|calc", "@SUM(A1)", "-2+3", "=HYPERLINK(x)")
    return f"{prefixes[i % len(prefixes)]}_{label}_{i}{suffix}"


def assert_inert(path: Path) -> list[list[str]]:
    """No cell of the raw file starts like a formula (plain numbers excepted)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    for row in rows:
        for cell in row:
            starts = cell.startswith(("=", "+", "-", "@", "\t", "\r"))
            assert not starts or _PLAIN_NUMBER.fullmatch(cell), (path.name, cell)
    return rows


@pytest.fixture(scope="module")
def world(tmp_path_factory, nih14_root):
    """An NIH-format folder of 24 real films whose file names start like formulas."""
    base = tmp_path_factory.mktemp("hostile")
    data = base / "nih"
    (data / "images").mkdir(parents=True)
    entries = pd.read_csv(nih14_root / "Data_Entry_2017.csv", dtype=str, keep_default_na=False)
    sources = sorted(p.name for p in (nih14_root / "images").glob("*.png"))[:24]
    entries = entries[entries["Image Index"].isin(sources)].copy()
    renamed = {name: hostile_name(i, "NIH", ".png") for i, name in enumerate(sources)}
    for old, new in renamed.items():
        shutil.copy(nih14_root / "images" / old, data / "images" / new)
    entries["Image Index"] = entries["Image Index"].map(renamed)
    entries.to_csv(data / "Data_Entry_2017.csv", index=False)  # as a foreign tool writes it
    config = {
        "data": {"path": str(data), "val": 0.5, "cache_dir": str(base / "cache"), "cache_size": 64},
        "model": {"name": "small_cnn", "in_chans": 1},
        "preprocess": {"input_size": 64},
        "optim": {"name": "adamw", "lr": 0.003, "batch_size": 8},
        "eval": {"n_boot": 20, "batch_size": 16},
        "epochs": 1,
        "num_workers": 0,
        "device": "cpu",
        "out_dir": str(base / "run"),
    }
    (base / "train.yaml").write_text(yaml.safe_dump(config))
    return {"base": base, "data": data, "config": base / "train.yaml", "run": base / "run"}


def _hostile_ids(values) -> set[str]:
    return {v for v in values if v[:1] in ("=", "+", "@", "-", "\t")}


def test_training_evaluation_refresh_predict_and_external(world):
    base, run = world["base"], world["run"]
    assert main(["train", "--config", str(world["config"]), "--no-progress"]) == 0
    checkpoint = run / "model.safetensors"
    assert_inert(run / "eval" / "val" / "predictions.csv")
    trained = read_prediction_table(run / "eval" / "val" / "predictions.csv")
    assert _hostile_ids(trained.frame["image_id"])  # hostile names came back as written

    out = base / "evaluated"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--split", "val", "--out", str(out)]
    assert main([*args, "--n-boot", "10", "--no-progress"]) == 0
    assert_inert(out / "predictions.csv")
    evaluated = read_prediction_table(out / "predictions.csv")
    assert list(evaluated.frame["image_id"]) == list(trained.frame["image_id"])
    for path in evaluated.frame["path"]:
        assert Path(path).is_file()  # the exact path, restored: '=1+1_NORMAL_0.jpeg' on disk

    assert main(["card", "refresh", "--checkpoint", str(checkpoint), "--n-boot", "10"]) == 0
    assert_inert(run / "eval" / "val" / "predictions.csv")
    assert (
        read_prediction_table(run / "eval" / "val" / "predictions.csv")
        .frame["path"]
        .map(lambda p: Path(p).is_file())
        .all()
    )

    predicted = base / "predicted"
    assert (
        main(
            [
                "predict",
                str(world["data"]),
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(predicted),
            ]
        )
        == 0
    )
    assert_inert(predicted / "predictions.csv")
    table = read_prediction_table(predicted / "predictions.csv")
    written = sorted(p.name for p in (world["data"] / "images").glob("*.png"))
    assert sorted(table.frame["image_id"]) == written
    assert set(table.frame["outcome"]) == {"scored"}

    external = base / "external"
    args = [
        "evaluate",
        "--predictions",
        str(predicted / "predictions.csv"),
        "--like",
        str(checkpoint),
    ]
    assert (
        main([*args, "--split", "val", "--n-boot", "10", "--name", READER, "--out", str(external)])
        == 0
    )
    assert_inert(external / "eval" / "val" / "predictions.csv")
    theirs = read_prediction_table(external / "eval" / "val" / "predictions.csv").frame
    assert sorted(theirs["image_id"]) == sorted(evaluated.frame["image_id"])
    assert json.loads((external / "external.json").read_text())["architecture"] == "external"


def test_review_export_and_agreement_with_a_hostile_reader(world, tmp_path):
    run = world["run"]
    if not (run / "model.safetensors").is_file():
        assert main(["train", "--config", str(world["config"]), "--no-progress"]) == 0
    frame = read_prediction_table(run / "eval" / "val" / "predictions.csv").frame
    store = ReviewStore(tmp_path / "db")
    session = store.create_session(
        "=1+1 session", str(run), "val", mode="blind_labels", classes=["Pneumonia"]
    )
    for i, image_id in enumerate(frame["image_id"]):
        store.record(
            session.id,
            image_id,
            "Pneumonia",
            reviewer=READER,
            finding="present" if i % 2 else "absent",
            note="=2+2",
        )
        store.record(
            session.id,
            image_id,
            "Pneumonia",
            reviewer=OTHER_READER,
            finding="present" if i % 3 else "absent",
        )
    exported = tmp_path / "export.csv"
    assert (
        main(
            [
                "review",
                "export",
                "--db",
                str(store.folder),
                "--session",
                str(session.id),
                "--out",
                str(exported),
                "--identifiable",  # the hostile file names themselves must come out inert
            ]
        )
        == 0
    )
    assert_inert(exported)
    back = read_table(exported, dtype=str, keep_default_na=False)
    assert set(back["reviewer"]) == {READER, OTHER_READER} and set(back["note"]) <= {"=2+2", ""}
    assert set(back["image_id"]) == set(frame["image_id"])

    agreement = tmp_path / "agreement.csv"
    args = ["review", "agreement", "--db", str(store.folder), "--session", str(session.id)]
    assert main([*args, "--bootstrap", "10", "--csv", str(agreement)]) == 0
    assert_inert(agreement)
    table = read_table(agreement, dtype=str, keep_default_na=False)
    readers = set(table["rater_a"]) | set(table["rater_b"])
    assert {READER, OTHER_READER} <= readers, list(table.columns)


def test_explain_eval_per_box_table(world, nih14_root, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    sources = sorted((nih14_root / "images").glob("*.png"))[:3]
    names = [hostile_name(i, "NIH", ".png") for i in range(3)]
    for source, name in zip(sources, names):
        shutil.copy(source, images / name)
    boxes = tmp_path / "BBox_List_2017.csv"
    with open(boxes, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
        for name in names:
            writer.writerow([name, "Mass", 300, 300, 200, 150])
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=PreprocessConfig(cache_size=64, input_size=48, in_chans=1).to_dict(),
        in_chans=1,
    )
    model = create_model("small_cnn", 14, in_chans=1)
    checkpoint = save_checkpoint(tmp_path / "nih" / "model.safetensors", model.state_dict(), card)
    out = tmp_path / "boxes.csv"
    args = [
        "explain-eval",
        "--checkpoint",
        str(checkpoint),
        "--images",
        str(images),
        "--bbox",
        str(boxes),
    ]
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    assert_inert(out)
    per_box = read_table(out, dtype=str, keep_default_na=False)
    assert sorted(per_box["image_id"]) == sorted(names)


def test_segmentation_scores_table(montgomery_root, tmp_path):
    data = tmp_path / "masks"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    sources = sorted((montgomery_root / "images").glob("*.png"))[:4]
    names = [hostile_name(i, "MCU", ".png") for i in range(4)]
    for source, name in zip(sources, names):
        shutil.copy(source, data / "images" / name)
        shutil.copy(montgomery_root / "masks" / source.name, data / "masks" / name)
    out = tmp_path / "seg"
    lungs = REPO / "checkpoints" / "lungs" / "model.safetensors"
    args = ["evaluate", "--checkpoint", str(lungs), "--data", str(data), "--split", "all"]
    assert main([*args, "--n-boot", "10", "--device", "cpu", "--out", str(out)]) == 0
    assert_inert(out / "scores.csv")
    scores = read_table(out / "scores.csv", dtype={"image_id": str})
    assert sorted(scores["image_id"]) == sorted(Path(n).stem for n in names)
