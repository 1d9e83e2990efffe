"""Finding a model card's data again after the project moved (``data_config_of``)."""

from __future__ import annotations

import pytest

from cxr_core.errors import DatasetError
from cxr_core.models.card import ModelCard
from cxr_core.training.data_setup import data_config_of


def _card(config: dict) -> ModelCard:
    members = [{"architecture": "small_cnn", "input_size": 32}] * 2 if "ensemble" in config else []
    return ModelCard(architecture="ensemble" if members else "small_cnn", num_classes=1,
                     label_space={"name": "x", "classes": ["A"], "task": "multilabel"},
                     preprocess={"input_size": 32, "cache_size": 32}, members=members, training={"config": config})


@pytest.mark.parametrize("kind", ["run", "ensemble"])
def test_data_and_cache_are_found_where_they_moved_with_the_checkpoint(tmp_path, kind):
    then = tmp_path / "old" / "repo"  # trained here; the data lay beside the repository
    data = {"path": str(tmp_path / "old" / "shared" / "set"), "cache_dir": str(then / ".cxr_cache")}
    out_dir = str(then / "checkpoints" / "m")
    config = {"data": data, **({"ensemble": {"out_dir": out_dir}} if kind == "ensemble" else {"out_dir": out_dir})}
    now = tmp_path / "new" / "clone"
    (tmp_path / "new" / "shared" / "set").mkdir(parents=True)
    checkpoint = now / "checkpoints" / "m" / "model.safetensors"

    found = data_config_of(_card(config), checkpoint=checkpoint)
    assert found.path == str(tmp_path / "new" / "shared" / "set")
    assert found.cache_dir == str(now / ".cxr_cache")
    assert data_config_of(_card(config), checkpoint=checkpoint, cache_dir="c").cache_dir == "c"

    with pytest.raises(DatasetError, match="pass --data"):
        data_config_of(_card(config), checkpoint=tmp_path / "elsewhere" / "model.safetensors")
    given = data_config_of(_card(config), checkpoint=tmp_path / "elsewhere" / "model.safetensors", path=str(tmp_path))
    assert given.path == str(tmp_path) and given.cache_dir == data["cache_dir"]
