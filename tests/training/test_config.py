"""Training configs: the shipped ones load, and every mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cxr_core.errors import ConfigError
from cxr_core.training.config import EnsembleConfig, TrainConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"data": {"path": "data/set"}}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


SHIPPED = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def _is_ensemble_recipe(path: Path) -> bool:
    return "members" in (yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize(
    "path",
    [p for p in SHIPPED if not _is_ensemble_recipe(p)],
    ids=lambda p: str(p.relative_to(REPO_ROOT / "configs")),
)
def test_shipped_configs_load(path):
    config = TrainConfig.from_yaml(path, base_dir=REPO_ROOT)
    assert Path(config.data.path).is_absolute()
    assert Path(config.out_dir).is_absolute()


@pytest.mark.parametrize(
    "path",
    [p for p in SHIPPED if _is_ensemble_recipe(p)],
    ids=lambda p: str(p.relative_to(REPO_ROOT / "configs")),
)
def test_shipped_ensemble_recipes_load_with_their_members(path):
    recipe = EnsembleConfig.from_yaml(path, base_dir=REPO_ROOT)
    members = [TrainConfig.from_yaml(m, base_dir=REPO_ROOT) for m in recipe.members]
    assert len(members) >= 2 and len({m.out_dir for m in members}) == len(members)
    assert (
        len({(m.data.path, m.data.val, m.data.split_seed, m.data.cache_size) for m in members}) == 1
    )
    assert Path(recipe.out_dir).is_absolute()


def test_smoke_config_values():
    config = TrainConfig.from_yaml(REPO_ROOT / "configs" / "smoke.yaml", base_dir=REPO_ROOT)
    assert config.model.name == "small_cnn"
    assert config.preprocess.input_size == 64 and config.data.cache_size == 64
    assert config.epochs == 1
    assert config.data.path == str((REPO_ROOT / "../shared/data/pneumonia/chest_xray").resolve())


def test_relative_paths_resolve_against_base_dir(tmp_path):
    config = TrainConfig.from_yaml(
        _write(tmp_path, MINIMAL | {"out_dir": "runs/x"}), base_dir=tmp_path
    )
    assert config.data.path == str(tmp_path / "data" / "set")
    assert config.out_dir == str(tmp_path / "runs" / "x")
    assert config.data.cache_dir == str(tmp_path / ".cxr_cache")


def test_round_trip_through_yaml(tmp_path):
    config = TrainConfig.from_dict(
        MINIMAL | {"ema": {"decay": 0.99}, "model": {"finetune": ["layer3", "layer4"]}},
        base_dir=tmp_path,
    )
    again = TrainConfig.from_dict(yaml.safe_load(config.to_yaml()))
    assert again == config


def test_scientific_notation_and_overrides(tmp_path):
    path = _write(tmp_path, MINIMAL)
    path.write_text(path.read_text() + "optim:\n  lr: 1e-3\n")  # PyYAML reads 1e-3 as a string
    config = load_config(path, overrides={"epochs": 7, "optim.batch_size": 4}, base_dir=tmp_path)
    assert config.optim.lr == 0.001 and config.epochs == 7 and config.optim.batch_size == 4


@pytest.mark.parametrize(
    "data, key",
    [
        ({"epochz": 3}, "epochz"),
        ({"optim": {"lrr": 0.1}}, "optim.lrr"),
        ({"data": {"path": "x", "valid": 0.2}}, "data.valid"),
        ({"augment": {"rotate": 5}}, "augment.rotate"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"epochs": 1.5}, "epochs"),
        ({"channels_last": "yes"}, "channels_last"),
        ({"optim": {"name": "sgd"}}, "optim.name"),
        ({"amp": "fp8"}, "amp"),
        ({"data": {"path": "x", "val": 0.0}}, "data.val"),
        ({"preprocess": {"input_size": 512}}, "preprocess.input_size"),
        ({"model": {"finetune": "last:x"}}, "model.finetune"),
        ({"schedule": {"name": "step"}}, "schedule.name"),
        ({"device": "tpu"}, "device"),
        ({"optim": 3}, "optim"),
    ],
)
def test_mistakes_name_their_key(tmp_path, data, key):
    merged = {**MINIMAL, **data}
    if "data" in data:
        merged["data"] = data["data"]
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(_write(tmp_path, merged), base_dir=tmp_path)
    assert key in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="YAML"):
        TrainConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="data.path"):
        TrainConfig.from_yaml(_write(tmp_path, {"epochs": 1}))


@pytest.mark.parametrize(
    "eval_section, key",
    [
        ({"n_boot": -1}, "eval.n_boot"),
        ({"tta": "spin"}, "eval.tta"),
        ({"batch_size": 0}, "eval.batch_size"),
        ({"operating_point": "sensitivity=90"}, "eval.operating_point"),
    ],
)
def test_ensemble_recipes_check_eval_like_training_configs(tmp_path, eval_section, key):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"members": ["a.yaml", "b.yaml"], "eval": eval_section}))
    with pytest.raises(ConfigError, match=key):
        EnsembleConfig.from_yaml(recipe)


def test_amp_off_unquoted_means_float32(tmp_path):
    path = _write(tmp_path, MINIMAL)
    path.write_text(path.read_text() + "amp: off\n")  # PyYAML reads a bare off as false
    assert TrainConfig.from_yaml(path, base_dir=tmp_path).amp == "off"


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        (
            {
                "task": "segmentation",
                "data": {"path": "data/set", "format": "masks"},
                "loss": {"kind": "dice_bce"},
                "preprocess": {"lung_mask": True},
            },
            "preprocess.lung_mask",
            "segmentation model",
        ),
        (
            {"preprocess": {"lung_checkpoint": "lungs.safetensors"}},
            "preprocess.lung_checkpoint",
            "lung_mask is false",
        ),
        ({"preprocess": {"lung_dilation": 0.05}}, "preprocess.lung_dilation", "lung_mask is false"),
        (
            {"preprocess": {"lung_mask": True, "lung_dilation": 0.4}},
            "preprocess.lung_dilation",
            r"in \[0, 0.25\]",
        ),
        (
            {"preprocess": {"lung_mask": True, "lung_dilation": -0.01}},
            "preprocess.lung_dilation",
            r"in \[0, 0.25\]",
        ),
        ({"preprocess": {"lung_mask": "yes"}}, "preprocess.lung_mask", "true or false"),
    ],
)
def test_lung_mask_mistakes_name_their_key(tmp_path, extra, key, message):
    with pytest.raises(ConfigError, match=rf"{key}.*{message}"):
        TrainConfig.from_yaml(_write(tmp_path, MINIMAL | extra), base_dir=tmp_path)


def test_lung_mask_settings_default_and_resolve(tmp_path):
    config = TrainConfig.from_yaml(
        _write(tmp_path, MINIMAL | {"preprocess": {"lung_mask": True}}), base_dir=tmp_path
    )
    assert config.preprocess.lung_checkpoint is None and config.preprocess.lung_dilation == 0.03
    own = MINIMAL | {
        "preprocess": {
            "lung_mask": True,
            "lung_checkpoint": "models/lungs.safetensors",
            "lung_dilation": 0,
        }
    }
    config = TrainConfig.from_yaml(_write(tmp_path, own), base_dir=tmp_path)
    assert config.preprocess.lung_checkpoint == str(tmp_path / "models" / "lungs.safetensors")
    assert config.preprocess.lung_dilation == 0.0
    again = TrainConfig.from_yaml(
        _write(tmp_path, yaml.safe_load(config.to_yaml())), base_dir=tmp_path
    )
    assert (
        again.preprocess == config.preprocess
    )  # the config written next to a run reads back the same


def test_the_lung_mask_experiment_is_the_bundled_recipe_plus_the_mask():
    """Same data, split, model and schedule as configs/pneumonia.yaml: only the lungs are masked."""
    bundled = TrainConfig.from_yaml(
        REPO_ROOT / "configs" / "pneumonia.yaml", base_dir=REPO_ROOT
    ).to_dict()
    masked = TrainConfig.from_yaml(
        REPO_ROOT / "configs" / "experiments" / "pneumonia_lungmask.yaml", base_dir=REPO_ROOT
    ).to_dict()
    assert (
        masked["preprocess"].pop("lung_mask") is True
        and bundled["preprocess"].pop("lung_mask") is False
    )
    assert masked.pop("out_dir").startswith(str(REPO_ROOT / "runs"))
    bundled.pop("out_dir")
    masked.pop("provenance"), bundled.pop("provenance")
    assert masked == bundled
