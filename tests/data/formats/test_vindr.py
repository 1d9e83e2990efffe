"""VinDr-CXR: the real per-reader file, consensus rules, per-reader labels, fused and per-reader boxes."""

from __future__ import annotations

import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_box_table, load_dataset
from cxr_core.data.formats.boxes import fuse_boxes
from cxr_core.errors import DatasetError
from tests.data.formats.conftest import write_image

VINDR = "vinbigdata-train.csv.gz"


@pytest.fixture(scope="module")
def rows(labels_root):
    return pd.read_csv(labels_root / VINDR)


@pytest.fixture(scope="module")
def readers(rows):
    """image x finding -> how many readers marked it."""
    return (
        rows.drop_duplicates(["image_id", "class_name", "rad_id"])
        .groupby(["image_id", "class_name"])
        .size()
    )


def test_consensus_rules_on_the_real_file(labels_root, readers):
    assert detect_format(labels_root / VINDR)[0] == "vindr-cxr"
    votes = readers.unstack(fill_value=0)
    for rule, need in (("any", 1), ("majority", 2), ("all", 3)):
        manifest = load_dataset(labels_root / VINDR, consensus=rule, check_files=False)
        assert len(manifest) == 15000
        frame = manifest.frame.set_index("image_id")
        for name, cls in (
            ("Cardiomegaly", "Cardiomegaly"),
            ("Pleural effusion", "Pleural Effusion"),
        ):
            assert int(frame[cls].sum()) == int((votes[name] >= need).sum()), (rule, cls)
        findings = [c for c in manifest.classes if c != "No Finding"]
        assert (frame["No Finding"] == (frame[findings].sum(axis=1) == 0)).all()
    assert int((votes["No finding"] == 3).sum()) == 10606  # every reader saw nothing


def test_one_readers_labels_are_unknown_where_they_did_not_read(labels_root, rows):
    manifest = load_dataset(labels_root / VINDR, consensus="R9", check_files=False)
    read = set(rows.loc[rows["rad_id"] == "R9", "image_id"])
    known = manifest.frame["Cardiomegaly"].notna()
    assert set(manifest.frame.loc[known, "image_id"]) == read and len(read) == 15000 - 8875
    with pytest.raises(DatasetError, match="neither a rule .* nor a reader"):
        load_dataset(labels_root / VINDR, consensus="R99", check_files=False)


def test_boxes_fused_across_readers_and_per_reader(labels_root, rows, tmp_path):
    boxed = rows.dropna(subset=["x_min"])
    per_finding = (
        boxed.drop_duplicates(["image_id", "class_name", "rad_id"])
        .groupby(["image_id", "class_name"])
        .size()
    )
    three = per_finding[per_finding == 3].index[0][
        0
    ]  # an image with a finding all three readers boxed
    chosen = [three, *boxed["image_id"].drop_duplicates().iloc[:3]]
    folder = tmp_path / "vindr"
    folder.mkdir()
    rows[rows["image_id"].isin(chosen)].to_csv(folder / "train.csv", index=False)
    for i, image in enumerate(dict.fromkeys(chosen)):
        write_image(folder / "train" / f"{image}.png", seed=i)
    per_reader = load_box_table(folder, boxes="per_reader")
    assert len(per_reader) == len(rows[rows["image_id"].isin(chosen)].dropna(subset=["x_min"]))
    assert per_reader["width"].isna().all()  # pixels of the image file itself
    fused = load_box_table(folder)
    assert len(fused) < len(per_reader) and fused["reader"].str.startswith("fused:").all()
    majority = load_box_table(folder, consensus="majority")
    assert (
        set(majority["reader"]) <= {"fused:2", "fused:3"} and (majority["image_id"] == three).any()
    )


def test_fusion_averages_overlapping_boxes_of_different_readers():
    table = pd.DataFrame(
        {
            "image_id": "a",
            "path": "a.png",
            "finding": "Cardiomegaly",
            "x": [10.0, 12.0, 200.0],
            "y": [10.0, 8.0, 200.0],
            "w": [100.0, 100.0, 20.0],
            "h": [50.0, 54.0, 20.0],
            "reader": ["R1", "R2", "R3"],
            "width": float("nan"),
            "height": float("nan"),
        }
    )
    fused = fuse_boxes(table, iou=0.4)
    assert fused[["x", "y", "w", "h"]].values.tolist() == [
        [11.0, 9.0, 100.0, 52.0],
        [200.0, 200.0, 20.0, 20.0],
    ]
    assert fused["reader"].tolist() == ["fused:2", "fused:1"]
    assert len(fuse_boxes(table, min_readers=2)) == 1
