"""The seed recipes (configs/seeds/): each loads, its as-run-here twin differs only where allowed,
and each trains and evaluates end to end through ``cxr train`` / ``cxr evaluate`` on a tiny copy of
the data it expects (real films, 64 px, 1 epoch)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cxr_core.cli.main import main
from cxr_core.models.checkpoint import read_model_card
from cxr_core.training.config import load_config

SEEDS = Path(__file__).resolve().parents[2] / "configs" / "seeds"
RECIPES = sorted(SEEDS.glob("0*.yaml"))
# What the shared-data twin of a recipe may change: where the data is and what it is called there,
# the weights this machine has, and the size of the run (input, epochs, batch).
ALLOWED = {
    "data.path",
    "data.format",
    "data.adapter",
    "data.classes",
    "data.val",
    "model.weights",
    "preprocess.input_size",
    "optim.batch_size",
    "epochs",
    "out_dir",
    "provenance",
}
SIX = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumonia")
TINY = {
    "data.cache_size": 64,
    "preprocess.input_size": 64,
    "model.weights": None,
    "epochs": 1,
    "optim.batch_size": 8,
    "eval.n_boot": 20,
    "num_workers": 0,
    "device": "cpu",
    "amp": "off",
}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "adapter":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_seed_is_there_with_its_twin_run_on_shared_data():
    assert [p.name[:3] for p in RECIPES] == ["000", "001", "002", "003", "003", "003", "004"]
    for recipe in RECIPES:
        twin = SEEDS / "shared" / recipe.name
        load_config(recipe)
        load_config(twin)
        a, b = _flat(yaml.safe_load(recipe.read_text())), _flat(yaml.safe_load(twin.read_text()))
        changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        assert changed <= ALLOWED, f"{twin.name} changes {sorted(changed - ALLOWED)}"


def _run(recipe: Path, data: dict, tmp_path: Path, capsys) -> str:
    """Train the recipe on ``data`` (dotted overrides of its data section) at tiny size, then
    evaluate its checkpoint; returns what ``cxr evaluate`` printed."""
    config = yaml.safe_load(recipe.read_text())
    for dotted, value in {
        **TINY,
        **data,
        "data.cache_dir": str(tmp_path / "cache"),
        "out_dir": str(tmp_path / "run"),
    }.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / recipe.name
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    capsys.readouterr()
    checkpoint = tmp_path / "run" / "model.safetensors"
    assert (
        main(["evaluate", "--checkpoint", str(checkpoint), "--split", "val", "--no-progress"]) == 0
    )
    return capsys.readouterr().out


@pytest.fixture
def chexpert_copy(labels_root, nih14_root, tmp_path):
    """Rows of CheXpert's real train.csv (frontal), each Path holding a real (NIH) film."""
    with gzip.open(labels_root / "chexpert_train.csv.gz", "rt") as fh:
        rows = pd.read_csv(fh, nrows=3000)
    rows = rows[rows["Frontal/Lateral"] == "Frontal"]
    # 10 positives of each of the six findings, so that validation has some of each
    rows = pd.concat([rows[rows[c] == 1].head(10) for c in SIX]).drop_duplicates("Path").head(60)
    films = sorted((nih14_root / "images").glob("*.png"))
    for row, film in zip(rows["Path"], films):
        (tmp_path / "data" / row).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / row).symlink_to(film)
    csv = tmp_path / "data" / "CheXpert-v1.0-small" / "train.csv"
    rows.to_csv(csv, index=False)
    return csv


def nih_copy(nih14_root: Path, dest: Path, findings: tuple[str, ...], per_finding: int = 8) -> Path:
    """An NIH folder (real films, linked) with ``per_finding`` positives of each finding (NIH
    spelling) and as many normals, so that a small validation split still has every class."""
    entries = pd.read_csv(nih14_root / "Data_Entry_2017.csv", dtype=str, keep_default_na=False)
    labels = entries["Finding Labels"].str.split("|")
    picks = [
        entries[labels.map(lambda ls, f=f: f in ls)].head(per_finding)
        for f in (*findings, "No Finding")
    ]
    chosen = pd.concat(picks).drop_duplicates("Image Index")
    (dest / "images").mkdir(parents=True)
    for name in chosen["Image Index"]:
        (dest / "images" / name).symlink_to(nih14_root / "images" / name)
    chosen.to_csv(dest / "Data_Entry_2017.csv", index=False)
    return dest


NIH_SIX = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Pneumonia")
NIH_14 = (*NIH_SIX, "Infiltration", "Mass", "Nodule", "Pneumothorax", "Emphysema", "Fibrosis")
NIH_14 += ("Pleural_Thickening", "Hernia")


@pytest.fixture
def radiography_copy(covid_root, tmp_path):
    """The COVID-19 Radiography Database layout (4 classes, images/ + masks/) holding real films."""
    root = tmp_path / "COVID-19_Radiography_Dataset"
    sources = {
        "COVID": "Covid-19",
        "Normal": "No_findings",
        "Viral Pneumonia": "Pneumonia",
        "Lung_Opacity": "Pneumonia",
    }
    for cls, source in sources.items():
        films = sorted((covid_root / source).glob("*.png"))[-10:]
        for i, film in enumerate(films, start=1):
            for sub in ("images", "masks"):
                (root / cls / sub).mkdir(parents=True, exist_ok=True)
                (root / cls / sub / f"{cls}-{i}.png").symlink_to(film)
    return tmp_path


@pytest.mark.slow
def test_000_chexpert_six_findings_per_class_accuracy(chexpert_copy, tmp_path, capsys):
    out = _run(RECIPES[0], {"data.path": str(chexpert_copy), "data.val": 0.4}, tmp_path, capsys)
    header = next(line for line in out.splitlines() if line.startswith("class"))
    assert "acc" in header and "PPV" in header and "sens" in header and "F1" in header
    for finding in SIX:
        assert any(line.startswith(finding) for line in out.splitlines())
    assert "Fracture" not in out  # the other 8 CheXpert observations are not trained


@pytest.mark.slow
def test_001_nih_gray_resnet50_six_findings(nih14_root, tmp_path, capsys):
    data = {"data.path": str(nih_copy(nih14_root, tmp_path / "nih", NIH_SIX)), "data.val": 0.4}
    out = _run(RECIPES[1], data, tmp_path, capsys)
    assert "macro" in out and "sens [CI]" in out and "spec [CI]" in out and "youden" in out
    card = read_model_card(tmp_path / "run" / "model.safetensors")
    assert card.in_chans == 1 and card.classes == SIX


@pytest.mark.slow
def test_002_covid_three_classes_lung_masked(radiography_copy, tmp_path, capsys):
    out = _run(RECIPES[2], {"data.path": str(radiography_copy)}, tmp_path, capsys)
    assert "true \\ predicted" in out  # the confusion matrix
    assert "Lung Opacity" not in out and "Viral Pneumonia" in out


@pytest.mark.slow
@pytest.mark.parametrize("index", [3, 4, 5], ids=["small_cnn", "resnet50", "vgg16"])
def test_003_kermany_three_models(index, kermany_subset, tmp_path, capsys):
    data = kermany_subset(tmp_path / "kermany", per_class=16)
    out = _run(RECIPES[index], {"data.path": str(data)}, tmp_path, capsys)
    assert "true \\ predicted" in out and "Pneumonia" in out


@pytest.mark.slow
def test_004_nih14_layer2_to_4_f1_thresholds(nih14_root, tmp_path, capsys):
    data = {"data.path": str(nih_copy(nih14_root, tmp_path / "nih", NIH_14, 6)), "data.val": 0.4}
    out = _run(RECIPES[6], data, tmp_path, capsys)
    assert "thresholds from:" in out and "max_f1" in out
    assert read_model_card(tmp_path / "run" / "model.safetensors").num_classes == 14
