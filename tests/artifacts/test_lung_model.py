"""Naming the lung model of a lung-masked classifier, and finding those very weights again."""

from __future__ import annotations

import shutil

import pytest

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.artifacts.lung_model import (
    DEFAULT_LUNG_CHECKPOINT,
    find_lung_checkpoint,
    lung_mask_settings,
    lung_masker_for,
)
from cxr_core.data.lung_mask import LungMaskConfig
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError, ConfigError

PNEUMONIA = DEFAULT_LUNG_CHECKPOINT.parent.parent / "pneumonia" / "model.safetensors"


def test_settings_name_the_bundled_lung_model_by_its_weights():
    settings = lung_mask_settings(None, 0.05)
    assert settings.checkpoint == str(DEFAULT_LUNG_CHECKPOINT.resolve())
    assert settings.weights_sha256 == checkpoint_digest(DEFAULT_LUNG_CHECKPOINT)
    assert settings.dilation == 0.05


def test_settings_refuse_a_missing_file_a_classifier_and_a_non_checkpoint(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"preprocess.lung_checkpoint: the lung model .*nowhere.safetensors does not exist",
    ):
        lung_mask_settings(tmp_path / "nowhere.safetensors")
    with pytest.raises(ConfigError, match="is a multiclass model, not a lung segmentation model"):
        lung_mask_settings(PNEUMONIA)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="preprocess.lung_checkpoint"):
        lung_mask_settings(junk)


def test_the_recorded_lung_model_is_found_where_it_was_then_in_the_bundle(tmp_path):
    copy = tmp_path / "my_lungs.safetensors"
    shutil.copy(DEFAULT_LUNG_CHECKPOINT, copy)
    settings = lung_mask_settings(copy)
    assert find_lung_checkpoint(settings) == copy
    copy.unlink()  # a moved project: the bundled model has the same weights
    assert find_lung_checkpoint(settings) == DEFAULT_LUNG_CHECKPOINT


def test_other_weights_are_never_substituted(tmp_path):
    settings = LungMaskConfig(
        weights_sha256="ab" * 32, checkpoint=str(tmp_path / "gone.safetensors")
    )
    with pytest.raises(
        CheckpointError, match=r"sha256 abababababab\.\.\..*gone.safetensors nor .*lungs"
    ):
        find_lung_checkpoint(settings)
    with pytest.raises(CheckpointError, match="sha256"):
        lung_masker_for(PreprocessConfig(lung_mask=settings))


def test_unmasked_preprocessing_has_no_masker():
    assert lung_masker_for(PreprocessConfig()) is None
