"""The training engine with the classification task on real and synthetic images: learning,
outputs, masked labels, schedule."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.training import TrainConfig, train
from cxr_core.training.amp import resolve_amp
from cxr_core.training.engine import Engine
from cxr_core.training.sampling import EpochSampler
from cxr_core.training.schedule import LRSchedule
from cxr_core.utils.distributed import init_distributed, shutdown_distributed


def _log(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "training_log.jsonl").read_text().splitlines()]


def test_small_cnn_overfits_sixteen_real_radiographs(pneumonia_root, tmp_path, make_config):
    root = tmp_path / "kermany16"
    for folder in ("NORMAL", "PNEUMONIA"):
        (root / folder).mkdir(parents=True)
        for src in sorted((pneumonia_root / "train" / folder).glob("*.jpeg"))[:8]:
            shutil.copy(src, root / folder / src.name)
    config = make_config(
        root,
        tmp_path / "run",
        tmp_path / "cache",
        epochs=30,
        augment={"rotation": 0.0, "crop_scale": [1.0, 1.0]},
        data__val=0.2,
        optim__batch_size=16,
        optim__lr=0.003,
        optim__weight_decay=0.0,
        early_stopping__patience=None,
        eval__n_boot=0,
    )
    train(config, progress=False)
    losses = [row["train_loss"] for row in _log(tmp_path / "run")]
    # One full-batch Adam step per epoch; the augmentation-free loss falls ~20x (0.70 -> ~0.03).
    assert min(losses[-5:]) < losses[0] / 10, (
        f"train loss only went {losses[0]:.3f} -> {losses[-5:]}"
    )


def test_outputs_and_card_of_a_multiclass_run(class_folders, cache_dir, tmp_path, make_config):
    config = make_config(class_folders, tmp_path / "run", cache_dir, epochs=2)
    result = train(config, progress=False)
    out = tmp_path / "run"
    for name in (
        "model.safetensors",
        "last.safetensors",
        "train_state.pt",
        "training_log.jsonl",
        "config.yaml",
        "eval/val/predictions.csv",
        "eval/val/report.json",
    ):
        assert (out / name).is_file(), name
    assert TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text())) == config

    rows = _log(out)
    assert [r["epoch"] for r in rows] == [0, 1]
    for r in rows:
        assert r["monitor"] == "val_balanced_accuracy"
        assert (
            math.isfinite(r["train_loss"])
            and math.isfinite(r["val_loss"])
            and r["images_per_s"] > 0
        )
        assert set(r["val_auroc"]) == {"Normal", "Pneumonia"}
    best_row = max(rows, key=lambda r: r["val_balanced_accuracy"])
    assert (
        result.best_metric == best_row["val_balanced_accuracy"]
        and result.best_epoch == best_row["epoch"] + 1
    )

    ckpt = load_checkpoint(out / "model.safetensors")
    card = ckpt.card
    assert card.threshold_method == "argmax" and card.thresholds == {}
    assert card.training["epochs_run"] == 2 and card.training["device"] == "cpu"
    assert card.training["config"]["model"]["name"] == "small_cnn"
    data = card.data
    n_train, n_val = data["splits"]["train"]["images"], data["splits"]["val"]["images"]
    assert n_train + n_val == 40
    assert (
        data["splits"]["val"]["positives"]["Normal"]
        + data["splits"]["val"]["positives"]["Pneumonia"]
        == n_val
    )
    report = json.loads((out / "eval" / "val" / "report.json").read_text())
    assert card.validation["balanced_accuracy"] == report["multiclass"]["balanced_accuracy"]
    assert card.validation["macro_auroc"] == report["macro"]["auroc"]
    assert card.validation["n_images"] == n_val
    assert report["settings"]["bootstrap_unit"] == "patient"
    # The final evaluation saw the same model as the epoch loop did.
    assert report["multiclass"]["balanced_accuracy"] == pytest.approx(result.best_metric, abs=1e-12)
    frame, classes = load_predictions(out / "eval" / "val" / "predictions.csv")
    assert classes == ["Normal", "Pneumonia"] and len(frame) == n_val
    assert np.allclose(frame[["prob:Normal", "prob:Pneumonia"]].sum(axis=1), 1.0, atol=1e-5)


def test_masked_multilabel_training_with_unknown_labels(
    disease_folders, cache_dir, tmp_path, make_config
):
    config = make_config(
        disease_folders,
        tmp_path / "run",
        cache_dir,
        epochs=2,
        loss__pos_weight=True,
        data__val=0.3,
        half_weights=True,
    )
    train(config, progress=False)
    rows = _log(tmp_path / "run")
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert rows[0]["monitor"] == "val_macro_auroc" and rows[-1]["val_macro_auroc"] is not None

    frame, classes = load_predictions(tmp_path / "run" / "eval" / "val" / "predictions.csv")
    labels = frame[[f"label:{c}" for c in classes]].to_numpy()
    assert np.isnan(labels).any(axis=0).all(), (
        "every class should have unknown labels in this layout"
    )
    card = load_checkpoint(tmp_path / "run" / "model.safetensors").card
    assert (
        card.weights_dtype == "float16"
    )  # and the validation numbers were measured on those fp16 weights
    assert card.threshold_method == "specificity=0.9" and set(card.thresholds) == set(
        classes
    )  # the default operating point
    assert all(0.0 <= t <= 1.0 for t in card.thresholds.values())
    for c in classes:
        known = ~np.isnan(frame[f"label:{c}"])
        assert (
            card.validation["per_class"][c]["n_pos"] + card.validation["per_class"][c]["n_neg"]
            == known.sum()
        )


@pytest.mark.parametrize("channels_last", [True, False])
def test_cpu_training_runs_channels_last_unless_switched_off(
    channels_last, class_folders, cache_dir, tmp_path, make_config
):
    config = make_config(class_folders, tmp_path / "run", cache_dir, channels_last=channels_last)
    ctx = init_distributed(config.device)
    try:
        engine = Engine(config, ctx, progress=False)
        engine.setup()
        convs = [
            m
            for m in engine.parts.model.modules()
            if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
        ]
        assert convs and all(
            c.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
            for c in convs
        )
        batch = engine.runtime.to_device(torch.zeros(2, 4, 8, 8))
        assert batch.is_contiguous(memory_format=torch.channels_last) == channels_last
    finally:
        shutdown_distributed(ctx)


def test_bad_settings_fail_before_training(class_folders, cache_dir, tmp_path, make_config):
    with pytest.raises(ConfigError, match="fp16"):
        resolve_amp("fp16", torch.device("cpu"))
    assert resolve_amp("auto", torch.device("cpu")) is None
    config = make_config(class_folders, tmp_path / "run", cache_dir, loss__kind="bce")
    with pytest.raises(ConfigError, match="multiclass"):
        train(config, progress=False)
    config = make_config(class_folders, tmp_path / "run2", cache_dir, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            train(config, progress=False)


def test_cosine_warmup_and_plateau_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cosine = LRSchedule(opt, kind="cosine", total_steps=10, warmup_steps=2, min_lr=0.0)
    lrs = [cosine.lr]
    for _ in range(10):
        cosine.step_batch()
        lrs.append(cosine.lr)
    assert lrs[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert lrs[2 + 4] == pytest.approx(0.5)  # half-way through the cosine part
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    plateau = LRSchedule(opt, kind="plateau", total_steps=10, patience=1, factor=0.5, min_lr=0.2)
    for metric in (0.5, 0.6, 0.6, 0.6):
        plateau.step_epoch(metric)
    assert plateau.lr == pytest.approx(0.5)
    for metric in (0.6, 0.6, 0.6, 0.6):
        plateau.step_epoch(metric)
    assert plateau.lr == pytest.approx(0.2)  # floored at min_lr
    restored = LRSchedule(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
        kind="plateau",
        total_steps=10,
        patience=1,
        factor=0.5,
        min_lr=0.2,
    )
    restored.load_state_dict(plateau.state_dict())
    assert restored.state_dict() == plateau.state_dict() and restored.lr == plateau.lr


def test_epoch_sampler_shards_cover_everything_each_epoch():
    shards = [EpochSampler(10, seed=3, rank=r, world_size=3) for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    seen = [idx for s in shards for _, idx in s]
    assert all(len(list(s)) == len(s) == 4 for s in shards)  # padded to equal length for DDP
    assert set(seen) == set(range(10)) and len(seen) == 12
    single = EpochSampler(10, seed=3)
    single.set_epoch(0)
    first = [i for _, i in single]
    single.set_epoch(1)
    assert sorted(first) == list(range(10)) and first != [i for _, i in single]
    single.set_epoch(0)
    assert first == [i for _, i in single]


@pytest.fixture(scope="module")
def lung_masked_run(kermany_subset, tmp_path_factory) -> dict:
    """One epoch of small_cnn on 48 real Kermany films (24 per class) lung-masked by the bundled lung
    model, cached at 224 px as the bundled pneumonia recipe caches them."""
    base = tmp_path_factory.mktemp("lung_masked")
    data = kermany_subset(base / "kermany48")
    settings = {
        "data": {
            "path": str(data),
            "val": 0.4,
            "cache_dir": str(base / "cache"),
            "cache_size": 224,
        },
        "model": {"name": "small_cnn", "in_chans": 1},
        "preprocess": {"input_size": 64, "lung_mask": True},
        "optim": {"batch_size": 8},
        "eval": {"n_boot": 50},
        "epochs": 1,
        "num_workers": 0,
        "device": "cpu",
        "out_dir": str(base / "run"),
    }
    config = TrainConfig.from_dict(settings)
    train(config, progress=False)
    return {
        "config": config,
        "settings": settings,
        "run": base / "run",
        "checkpoint": base / "run" / "model.safetensors",
    }


def _independent_lung_masks(images: np.ndarray, radius: int) -> np.ndarray:
    """The bundled lung model's masks of cache rows, re-derived here without cxr_core's masking code:
    probability >= 0.5, components under 3 px dropped, grown by a disk of ``radius`` px."""
    from scipy import ndimage

    from cxr_core.artifacts.lung_model import DEFAULT_LUNG_CHECKPOINT
    from cxr_core.models.segmentation import predict_mask_probs

    lungs = load_checkpoint(DEFAULT_LUNG_CHECKPOINT)
    model = lungs.build_model()
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = yy**2 + xx**2 <= radius**2
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for image in images:
            found = predict_mask_probs(model, image[None], lungs.preprocess, batch_size=1)[0] >= 0.5
            labels, _ = ndimage.label(found)
            sizes = np.bincount(labels.ravel())
            found &= sizes[labels] >= 3
            out.append(ndimage.binary_dilation(found, structure=disk))
    finally:
        torch.set_num_threads(before)
    return np.stack(out)


@pytest.mark.slow
def test_lung_masked_training_sees_only_the_lungs_and_predicts_as_evaluated(
    lung_masked_run, capsys
):
    from cxr_core.artifacts.catalog import checkpoint_digest
    from cxr_core.artifacts.lung_model import DEFAULT_LUNG_CHECKPOINT
    from cxr_core.cli.main import main
    from cxr_core.data.cache import ImageCache
    from cxr_core.data.imaging import load_image
    from cxr_core.errors import DatasetError
    from cxr_core.evaluation.run import predict_split
    from cxr_core.inference.predictor import Predictor
    from cxr_core.training.data_setup import build_manifest

    config, checkpoint = lung_masked_run["config"], lung_masked_run["checkpoint"]
    card = load_checkpoint(checkpoint).card
    assert card.preprocess["lung_mask"] == {
        "weights_sha256": checkpoint_digest(DEFAULT_LUNG_CHECKPOINT),
        "checkpoint": str(DEFAULT_LUNG_CHECKPOINT.resolve()),
        "dilation": 0.03,
    }

    # The run's cache: a masked copy of the plain cache, zero outside the dilated lungs (7 px at 224).
    indexes = sorted(Path(config.data.cache_dir).glob("*.json"))
    caches = {c.transform != "": c for c in map(ImageCache.open, indexes)}
    assert len(indexes) == 2 and set(caches) == {True, False}
    plain, masked = caches[False], caches[True]
    manifest = build_manifest(config.data)
    rows = masked.rows_for(manifest.split("train"))
    assert (plain.rows_for(manifest.split("train")) == rows).all()
    before, after = plain.get_batch(rows), masked.get_batch(rows)
    lungs = _independent_lung_masks(before, radius=7)
    assert (after[~lungs] == 0).all()
    np.testing.assert_array_equal(after[lungs], before[lungs])
    assert (
        0.2 < lungs.mean() < 0.6 and (before[~lungs] > 0).mean() > 0.9
    )  # a real share of each film went black

    # The Predictor masks every image the same way: its probabilities are the evaluation's.
    frame, classes = load_predictions(lung_masked_run["run"] / "eval" / "val" / "predictions.csv")
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    predicted = predictor.predict_probabilities([load_image(p) for p in frame["path"]])
    np.testing.assert_allclose(
        predicted, frame[[f"prob:{c}" for c in classes]].to_numpy(), rtol=0, atol=1e-6
    )

    # `cxr evaluate` rebuilds the same masked cache path and reproduces the training's predictions.
    training_eval = frame.copy()
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--no-progress"]) == 0
    assert "WARNING" not in capsys.readouterr().err
    again, _ = load_predictions(lung_masked_run["run"] / "eval" / "val" / "predictions.csv")
    np.testing.assert_allclose(
        again[[f"prob:{c}" for c in classes]],
        training_eval[[f"prob:{c}" for c in classes]],
        rtol=0,
        atol=1e-12,
    )

    # Whole images are never scored as if they were masked, nor a masked run resumed unmasked.
    with pytest.raises(DatasetError, match="holds whole .*trained on lung-masked images"):
        predict_split(checkpoint, manifest.split("val"), plain, device="cpu", progress=False)
    unmasked = TrainConfig.from_dict(
        {**lung_masked_run["settings"], "preprocess": {"input_size": 64}}
    )
    with pytest.raises(
        CheckpointError, match="started with lung masking .* asks for no lung masking"
    ):
        train(unmasked, resume=True, progress=False)


def test_a_missing_lung_model_stops_the_run_before_any_image_is_read(
    class_folders, tmp_path, make_config
):
    from cxr_core.training.inputs import build_preprocess

    config = make_config(
        class_folders,
        tmp_path / "run",
        tmp_path / "cache",
        preprocess__lung_mask=True,
        preprocess__lung_checkpoint=str(tmp_path / "lungs.safetensors"),
    )
    with pytest.raises(
        ConfigError, match="preprocess.lung_checkpoint: the lung model .* does not exist"
    ):
        build_preprocess(config)
    with pytest.raises(ConfigError, match="does not exist"):
        train(config, progress=False)
    assert not (tmp_path / "cache").exists()
