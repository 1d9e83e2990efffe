"""Finding a model card's data again after the project moved (``data_config_of``)."""

from __future__ import annotations

import pytest

from cxr_core.errors import DatasetError
from cxr_core.models.card import ModelCard
from cxr_core.training.data_setup import data_config_of


def _card(config: dict) -> ModelCard:
    members = [{"architecture": "small_cnn", "input_size": 32}] * 2 if "ensemble" in config else []
    return ModelCard(
        architecture="ensemble" if members else "small_cnn",
        num_classes=1,
        label_space={"name": "x", "classes": ["A"], "task": "multilabel"},
        preprocess={"input_size": 32, "cache_size": 32},
        members=members,
        training={"config": config},
    )


@pytest.mark.parametrize("kind", ["run", "ensemble"])
def test_data_and_cache_are_found_where_they_moved_with_the_checkpoint(tmp_path, kind):
    then = tmp_path / "old" / "repo"  # trained here; the data lay beside the repository
    data = {"path": str(tmp_path / "old" / "shared" / "set"), "cache_dir": str(then / ".cxr_cache")}
    out_dir = str(then / "checkpoints" / "m")
    config = {
        "data": data,
        **({"ensemble": {"out_dir": out_dir}} if kind == "ensemble" else {"out_dir": out_dir}),
    }
    now = tmp_path / "new" / "clone"
    (tmp_path / "new" / "shared" / "set").mkdir(parents=True)
    checkpoint = now / "checkpoints" / "m" / "model.safetensors"

    found = data_config_of(_card(config), checkpoint=checkpoint)
    assert found.path == str(tmp_path / "new" / "shared" / "set")
    assert found.cache_dir == str(now / ".cxr_cache")
    assert data_config_of(_card(config), checkpoint=checkpoint, cache_dir="c").cache_dir == "c"

    with pytest.raises(DatasetError, match="pass --data"):
        data_config_of(_card(config), checkpoint=tmp_path / "elsewhere" / "model.safetensors")
    given = data_config_of(
        _card(config), checkpoint=tmp_path / "elsewhere" / "model.safetensors", path=str(tmp_path)
    )
    assert given.path == str(tmp_path) and given.cache_dir == data["cache_dir"]


def _folders(root, counts: dict[str, int]):
    from tests.data.formats.conftest import write_image

    for cls, n in counts.items():
        for i in range(n):
            write_image(root / cls / f"{cls}_{i}.png", seed=i)
    return root


def test_one_class_folder_set_is_refused(tmp_path):
    from cxr_core.training.config import DataConfig
    from cxr_core.training.data_setup import build_manifest

    root = _folders(tmp_path / "set", {"NORMAL": 12})
    with pytest.raises(
        DatasetError, match=r"images of 1 class\(es\) only \(Normal\).*at least two classes"
    ):
        build_manifest(DataConfig(path=str(root), format="folders"))


def test_class_without_training_images_is_warned(tmp_path, caplog):
    from cxr_core.training.config import DataConfig
    from cxr_core.training.data_setup import build_manifest

    # the dataset's own split folders: PNEUMONIA appears in val only
    root = tmp_path / "set"
    _folders(root / "train", {"NORMAL": 8})
    _folders(root / "val", {"NORMAL": 3, "PNEUMONIA": 3})
    with caplog.at_level("WARNING", logger="cxr_core"):
        manifest = build_manifest(DataConfig(path=str(root), format="folders"))
    assert set(manifest.classes) == {"Normal", "Pneumonia"}
    assert (
        "No training images of Pneumonia (Pneumonia: 3 image(s) in the other splits)" in caplog.text
    )


def test_data_card_records_the_training_age_range():
    import pandas as pd

    from cxr_core.data.labels import LabelSpace
    from cxr_core.data.manifest import Manifest
    from cxr_core.training.config import DataConfig
    from cxr_core.training.data_setup import data_card

    rows = [
        {
            "image_id": f"i{i}",
            "path": f"/x/i{i}.png",
            "patient_id": f"p{i}",
            "view": "PA",
            "split": split,
            "A": float(i % 2),
            "age": age,
        }
        for i, (split, age) in enumerate(
            [("train", 34.0), ("train", 71.0), ("train", float("nan")), ("val", 5.0)]
        )
    ]
    manifest = Manifest(pd.DataFrame(rows), LabelSpace("x", ("A",)), source="ages")
    assert data_card(DataConfig(path="/x"), manifest)["age_range"] == [
        34.0,
        71.0,
    ]  # validation ages not counted
    assert (
        data_card(
            DataConfig(path="/x"),
            Manifest(pd.DataFrame(rows).drop(columns="age"), LabelSpace("x", ("A",))),
        )["age_range"]
        is None
    )
