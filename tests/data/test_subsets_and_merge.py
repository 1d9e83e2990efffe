"""Class subsets, view filters and merged datasets (harmonised label spaces, per-source counts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_core.cli.main import main
from cxr_core.data.formats import load_dataset
from cxr_core.data.manifest import select_classes, select_views
from cxr_core.data.merge import SOURCE_COLUMN, merge_manifests, per_source_counts
from cxr_core.data.splits import assign_splits
from cxr_core.errors import DatasetError, UnknownClassError
from cxr_core.training.config import TrainConfig
from cxr_core.training.data_setup import build_manifest


@pytest.fixture(scope="module")
def nih(nih14_root):
    return load_dataset(nih14_root)


@pytest.fixture(scope="module")
def covid(covid_root):
    return load_dataset(covid_root)


def test_multilabel_subset_keeps_every_image_and_the_chosen_columns(nih):
    six = select_classes(nih, ["Effusion", "Atelectasis", "Cardiomegaly"])  # any spelling
    assert six.classes == ("Pleural Effusion", "Atelectasis", "Cardiomegaly")
    assert len(six) == len(nih) and six.label_space.multilabel
    np.testing.assert_array_equal(six.labels()[:, 0], nih.frame["Pleural Effusion"].to_numpy())
    with pytest.raises(UnknownClassError, match="'Covid' is not a class of the nih14"):
        select_classes(nih, ["Covid"])


def test_multiclass_subset_leaves_out_the_other_classes_images(covid):
    two = select_classes(covid, ["Pneumonia", "No Finding"])
    counts = covid.frame[["Pneumonia", "No Finding"]].sum()
    assert len(two) == int(counts.sum()) and two.classes == ("Pneumonia", "No Finding")
    assert (two.labels().sum(axis=1) == 1).all()
    assert f"{int(covid.frame['COVID-19'].sum())} images of COVID-19 left out" in two.source
    with pytest.raises(UnknownClassError, match="at least two classes"):
        select_classes(covid, ["Pneumonia"])


def test_views_are_filtered_only_on_request(nih):
    pa = select_views(nih, ["pa"])
    assert len(pa) == int((nih.frame["view"] == "PA").sum()) == 1064
    assert len(select_views(nih, ["frontal"])) == len(nih) == 2074
    with pytest.raises(DatasetError, match="its views are: AP, PA"):
        select_views(nih, ["LATERAL"])


def test_merge_makes_unlabelled_findings_unknown_and_keeps_patients_apart(nih):
    other = select_classes(nih, ["Pneumonia", "Mass"])  # stands in for a second dataset
    merged = merge_manifests([nih, other], ["nih", "second"])
    assert merged.classes == nih.classes  # union, first appearance order
    second = merged.frame[merged.frame[SOURCE_COLUMN] == "second"]
    assert second["Atelectasis"].isna().all() and not second["Mass"].isna().any()
    assert merged.frame["patient_id"].nunique() == 2 * nih.frame["patient_id"].nunique()
    assert merged.frame["image_id"].str.startswith(("nih:", "second:")).all()
    counts = per_source_counts(merged)
    assert counts["second"]["classes"]["Atelectasis"] == {
        "positive": 0,
        "negative": 0,
        "unknown": 2074,
    }
    assert counts["nih"]["classes"]["Hernia"]["positive"] == 40
    assert counts["nih"]["patients"] == 1455


def test_merge_refuses_mixed_tasks(nih, covid):
    with pytest.raises(DatasetError, match="cannot merge multilabel and multiclass"):
        merge_manifests([nih, covid])


def test_config_merges_sources_and_subsets_after_the_split(nih14_root, covid_root, tmp_path):
    config = TrainConfig.from_dict(
        {
            "data": {
                "sources": [
                    {"name": "nih", "path": str(nih14_root)},
                    {"name": "second", "path": str(nih14_root), "format": "nih"},
                ],
                "classes": ["Pneumonia", "Effusion"],
            },
            "out_dir": str(tmp_path),
        }
    )
    manifest = build_manifest(config.data)
    assert manifest.classes == ("Pneumonia", "Pleural Effusion") and len(manifest) == 2 * 2074
    full = build_manifest(TrainConfig.from_dict({"data": {"path": str(nih14_root)}}).data)
    sub = build_manifest(
        TrainConfig.from_dict({"data": {"path": str(nih14_root), "classes": ["Pneumonia"]}}).data
    )
    assert sub.frame["split"].tolist() == full.frame["split"].tolist()  # same patients in val
    pa = build_manifest(
        TrainConfig.from_dict({"data": {"path": str(nih14_root), "views": ["PA"]}}).data
    )
    assert len(pa) == 1064 and set(pa.frame["view"]) == {"PA"}


def test_cli_inspect_merges_paths_and_counts_per_source(nih14_root, covid_root, capsys):
    assert (
        main(
            ["data", "inspect", str(covid_root), str(covid_root), "--classes", "Pneumonia,COVID-19"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "per source" in out and "covid19-2" in out
    assert main(["data", "inspect", str(nih14_root), "--classes", "Hernia", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        list(summary["classes"]) == ["Hernia"]
        and summary["classes"]["Hernia"]["all"]["positive"] == 40
    )
    split = assign_splits(load_dataset(nih14_root), val=0.15, seed=0).frame["split"]
    assert summary["splits"]["val"]["images"] == int((split == "val").sum())


def test_cli_refuses_a_flag_the_format_does_not_take(nih14_root, capsys):
    assert main(["data", "inspect", str(nih14_root), "--policy", "zeros"]) == 2
    assert "--policy does not apply to the nih format" in capsys.readouterr().err
    assert main(["data", "inspect", str(nih14_root), "--option", "imagesdir=x"]) == 2
    assert "images_dir" in capsys.readouterr().err
    assert (
        main(
            ["data", "inspect", str(nih14_root), "--option", f"images_dir={nih14_root / 'images'}"]
        )
        == 0
    )
