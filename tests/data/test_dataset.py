"""The torch Dataset over the cache and the train/eval transforms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate
from torchvision.transforms.v2 import functional as TF

from cxr_core.data.cache import ImageCache
from cxr_core.data.dataset import (
    AugmentConfig,
    CXRDataset,
    collate_batch,
    eval_transform,
    train_transform,
)
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor
from cxr_core.errors import ConfigError, DatasetError


def make_manifest(paths: list[Path], label_space: LabelSpace) -> Manifest:
    rows = []
    for i, path in enumerate(paths):
        row = {
            "image_id": path.name,
            "path": str(path),
            "patient_id": f"p{i // 2}",
            "view": "PA",
            "split": "train",
        }
        row.update({c: float((i + k) % 3 == 0) for k, c in enumerate(label_space.classes)})
        rows.append(row)
    return Manifest(pd.DataFrame(rows), label_space, source="test manifest")


def write_pngs(folder: Path, count: int, shape: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [folder / f"img{i:03d}.png" for i in range(count)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
    return paths


CFG = PreprocessConfig(cache_size=64, input_size=48)
# Identity normalisation on one channel: outputs are plain 0..255 gray, easy to compare.
RAW = PreprocessConfig(
    cache_size=64, input_size=64, in_chans=1, mean=(0.0, 0.0, 0.0), std=(1 / 255, 1.0, 1.0)
)


def params(
    batch: int, *, angle=0.0, w=64.0, h=64.0, cx=0.0, cy=0.0, flip=1.0
) -> dict[str, torch.Tensor]:
    full = lambda v: torch.full((batch,), float(v))  # noqa: E731
    return {
        "angle": full(angle),
        "crop_w": full(w),
        "crop_h": full(h),
        "centre_x": full(cx),
        "centre_y": full(cy),
        "flip": full(flip),
        "brightness": full(1),
        "contrast": full(1),
    }


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randint(
        0, 256, (3, 1, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    paths = write_pngs(folder / "images", 10, shape=(70, 90))
    manifest = make_manifest(paths, LabelSpace("three", ("A", "B", "C")))
    manifest.frame.loc[[1, 4], "B"] = np.nan
    return manifest, ImageCache.build(manifest, folder / "cache", 64, workers=1, progress=False)


# ----------------------------------------------------------------------------- transforms


def test_eval_transform_equals_eval_tensor_bit_for_bit(images):
    transform = eval_transform(CFG)
    batch = transform(images)
    assert batch.shape == (3, 3, 48, 48) and batch.dtype == torch.float32
    for i in range(3):
        single = transform(images[i])
        assert torch.equal(single, eval_tensor(images[i, 0].numpy(), CFG))
        assert torch.equal(batch[i], single)


def test_train_geometry_identity_flip_and_quarter_turn(images):
    t = train_transform(RAW, AugmentConfig())
    x = images.to(torch.float32)
    assert torch.equal(t.apply(images, params(3)), x)
    assert torch.equal(t.apply(images, params(3, flip=-1)), x.flip(-1))
    turned = t.apply(images, params(3, angle=math.pi / 2))
    assert min(float((turned - torch.rot90(x, k, (2, 3))).abs().max()) for k in (1, -1)) < 1e-2


def test_train_rotation_matches_torchvision(images):
    t = train_transform(RAW, AugmentConfig())
    ours = t.apply(images, params(3, angle=math.radians(13)))
    theirs = TF.rotate(images.to(torch.float32), 13, interpolation=TF.InterpolationMode.BILINEAR)
    assert float((ours - theirs)[..., 2:-2, 2:-2].abs().max()) < 0.01


def test_train_crop_matches_torchvision_resized_crop(images):
    t = train_transform(RAW, AugmentConfig())
    # A 32 x 48 crop centred 8 px right of and 2 px above the image centre, scaled to 64 x 64.
    ours = t.apply(images, params(3, w=32, h=48, cx=8, cy=-2))
    theirs = TF.resized_crop(
        images.to(torch.float32),
        top=6,
        left=24,
        height=48,
        width=32,
        size=[64, 64],
        antialias=False,
    )
    # Inside the crop both interpolate the same pixels; at its rim torchvision repeats the edge.
    assert float((ours - theirs)[..., 2:-2, 2:-2].abs().max()) < 1e-3


def test_train_transform_is_random_per_image_and_seed_reproducible():
    same = (
        torch.randint(0, 256, (1, 1, 64, 64), dtype=torch.uint8).expand(4, 1, 64, 64).contiguous()
    )
    t = train_transform(CFG, AugmentConfig(brightness=0.2, contrast=0.2, hflip=True))
    torch.manual_seed(5)
    first = t(same)
    torch.manual_seed(5)
    again = t(same)
    torch.manual_seed(6)
    other = t(same)
    assert first.shape == (4, 3, 48, 48) and first.dtype == torch.float32
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # each image gets its own parameters
    single = t(same[0])
    assert single.shape == (3, 48, 48)


def test_train_output_is_normalised_like_eval():
    # With augmentation switched off the training path produces the eval tensor.
    image = torch.randint(0, 256, (1, 64, 64), dtype=torch.uint8)
    cfg = PreprocessConfig(cache_size=64, input_size=64)
    t = train_transform(cfg, AugmentConfig(rotation=0, crop_scale=(1, 1), crop_ratio=(1, 1)))
    assert torch.allclose(t(image), eval_tensor(image[0], cfg), atol=1e-5)


def test_augment_config_validation_and_round_trip():
    aug = AugmentConfig(rotation=10, crop_scale=(0.8, 1.0), hflip=True, brightness=0.1)
    assert AugmentConfig.from_dict(aug.to_dict()) == aug
    with pytest.raises(ConfigError):
        AugmentConfig(crop_scale=(0.9, 0.5))
    with pytest.raises(ConfigError):
        AugmentConfig(rotation=-5)
    with pytest.raises(ConfigError, match="unknown augmentation"):
        AugmentConfig.from_dict({"rotate": 3})


# ----------------------------------------------------------------------------- dataset


def test_dataset_items_shapes_targets_and_nan(small_cache):
    manifest, cache = small_cache
    dataset = CXRDataset(manifest, cache, eval_transform(CFG))
    assert len(dataset) == 10
    image, target, index = dataset[4]
    assert image.shape == (3, 48, 48) and image.dtype == torch.float32
    assert target.dtype == torch.float32 and target.shape == (3,)
    assert index == 4 and torch.isnan(target[1])
    np.testing.assert_array_equal(target.numpy(), manifest.labels()[4])
    assert torch.equal(image, eval_tensor(cache[4], CFG))


def test_batched_fetch_equals_single_items(small_cache):
    manifest, cache = small_cache
    dataset = CXRDataset(manifest, cache, eval_transform(CFG))
    order = [9, 0, 4, 4, 7, 1, 2, 3, 5, 6, 8]  # more than one transform slice, repeats allowed
    for (image, target, index), i in zip(dataset.__getitems__(order), order):
        single = dataset[i]
        assert index == i and torch.equal(image, single[0])
        assert (
            torch.equal(target, single[1]) or (torch.isnan(target) == torch.isnan(single[1])).all()
        )


def test_split_of_the_manifest_maps_to_the_right_cache_rows(small_cache):
    manifest, cache = small_cache
    subset = manifest.with_frame(manifest.frame.iloc[[7, 2, 5]])
    dataset = CXRDataset(subset, cache, eval_transform(CFG))
    for i, row in enumerate((7, 2, 5)):
        image, target, index = dataset[i]
        assert index == i and torch.equal(image, eval_tensor(cache[row], CFG))
        np.testing.assert_array_equal(target.numpy(), manifest.labels()[row])


def test_multiclass_targets_are_one_hot(small_cache):
    manifest, cache = small_cache
    space = LabelSpace("pneu", ("Normal", "Pneumonia"), task="multiclass")
    frame = manifest.frame[["image_id", "path", "patient_id", "view", "split"]].copy()
    frame["Normal"] = [float(i % 2) for i in range(10)]
    frame["Pneumonia"] = 1.0 - frame["Normal"]
    multiclass = Manifest(frame, space)
    dataset = CXRDataset(multiclass, cache, eval_transform(CFG))
    targets = torch.stack([dataset[i][1] for i in range(10)])
    assert torch.equal(targets, torch.from_numpy(multiclass.labels()))
    assert torch.equal(targets.argmax(dim=1), torch.from_numpy(multiclass.class_indices()))


def test_dataset_refuses_mismatched_cache(small_cache):
    manifest, cache = small_cache
    with pytest.raises(ConfigError, match="cache_size=256"):
        CXRDataset(manifest, cache, eval_transform(PreprocessConfig()))
    stranger = manifest.with_frame(
        pd.concat(
            [manifest.frame.iloc[:2], manifest.frame.iloc[:1].assign(image_id="elsewhere.png")]
        )
    )
    with pytest.raises(DatasetError, match="elsewhere.png"):
        CXRDataset(stranger, cache, eval_transform(CFG))


def test_dataloader_training_batches_are_seed_reproducible_across_workers(small_cache):
    manifest, cache = small_cache
    dataset = CXRDataset(manifest, cache, train_transform(CFG, AugmentConfig()))

    def epoch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        loader = DataLoader(
            dataset,
            batch_size=4,
            shuffle=True,
            num_workers=2,
            collate_fn=collate_batch,
            generator=torch.Generator().manual_seed(seed),
        )
        batches = list(loader)
        return torch.cat([b[0] for b in batches]), torch.cat([b[2] for b in batches])

    images_a, order_a = epoch(1)
    images_b, order_b = epoch(1)
    images_c, order_c = epoch(2)
    assert images_a.shape == (10, 3, 48, 48)
    assert sorted(order_a.tolist()) == list(range(10))
    assert torch.equal(order_a, order_b) and torch.equal(images_a, images_b)
    assert not torch.equal(images_a, images_c)


def test_collate_batch_passes_the_batch_tensor_through(small_cache):
    manifest, cache = small_cache
    dataset = CXRDataset(manifest, cache, eval_transform(CFG))
    samples = dataset.__getitems__([3, 1, 4])
    images, targets, index = collate_batch(samples)
    assert images.data_ptr() == samples[0][0].data_ptr()  # no copy
    ref_images, ref_targets, ref_index = default_collate(samples)
    assert torch.equal(images, ref_images) and torch.equal(index, ref_index)
    assert torch.equal(torch.isnan(targets), torch.isnan(ref_targets)) and bool(
        torch.isnan(targets[2, 1])
    )
    # Separately built samples (per-item transforms) are stacked as default_collate would.
    loose = [dataset[2], dataset[0]]
    stacked = collate_batch(loose)
    assert torch.equal(stacked[0], torch.stack([loose[0][0], loose[1][0]])) and stacked[
        2
    ].tolist() == [2, 0]
