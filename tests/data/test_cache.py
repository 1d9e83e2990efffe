"""The memory-mapped image cache: build, reuse, rebuild, failures, interruption, pickling."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import cxr_core.data.cache as cache_module
from cxr_core.data.cache import ImageCache
from cxr_core.data.dataset import CXRDataset, collate_batch, eval_transform
from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14, LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, to_cache_array
from cxr_core.errors import DatasetError

SIZE = 64


def make_manifest(
    paths: list[Path], label_space: LabelSpace = NIH14, split: str = "train"
) -> Manifest:
    rows = []
    for i, path in enumerate(paths):
        row = {
            "image_id": path.name,
            "path": str(path),
            "patient_id": f"p{i // 2}",
            "view": "PA",
            "split": split,
        }
        row.update({c: float((i + k) % 3 == 0) for k, c in enumerate(label_space.classes)})
        rows.append(row)
    return Manifest(pd.DataFrame(rows), label_space, source="test manifest")


def write_pngs(folder: Path, count: int, shape: tuple[int, int] = (80, 96)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def count_decodes(monkeypatch) -> list[str]:
    """Record each load_image call of an in-process (workers=1) build."""
    calls: list[str] = []

    def counting(source, **kwargs):
        calls.append(str(source))
        return load_image(source, **kwargs)

    monkeypatch.setattr(cache_module, "load_image", counting)
    return calls


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def nih_paths(nih14_root) -> list[Path]:
    return sorted((nih14_root / "images").glob("*.png"))[:30]


@pytest.fixture(scope="module")
def nih_cache(nih_paths, tmp_path_factory) -> ImageCache:
    """30 real NIH images, decoded by two worker processes."""
    return ImageCache.build(
        make_manifest(nih_paths),
        tmp_path_factory.mktemp("nih_cache"),
        SIZE,
        workers=2,
        progress=False,
    )


def test_build_from_real_images_in_parallel(nih_cache, nih_paths):
    assert len(nih_cache) == 30 and nih_cache.size == SIZE
    assert nih_cache.array.shape == (30, SIZE, SIZE) and nih_cache.array.dtype == np.uint8
    for i in (0, 13, 29):
        expected = to_cache_array(load_image(nih_paths[i]).pixels, SIZE)
        np.testing.assert_array_equal(nih_cache[i], expected)
    np.testing.assert_array_equal(
        nih_cache.get_batch([29, 0]), np.stack([nih_cache[29], nih_cache[0]])
    )
    index = json.loads(nih_cache.index_path.read_text())
    assert index["image_ids"] == [p.name for p in nih_paths]
    assert index["original_shapes"] == [[256, 256]] * 30
    assert index["manifest_fingerprint"] == make_manifest(nih_paths).fingerprint()
    assert nih_cache.data_path.stat().st_size == 30 * SIZE * SIZE


def test_unchanged_manifest_reuses_the_cache_without_decoding(nih_cache, nih_paths, monkeypatch):
    before = nih_cache.data_path.stat()
    calls = count_decodes(monkeypatch)
    again = ImageCache.build(
        make_manifest(nih_paths), nih_cache.index_path.parent, SIZE, workers=1, progress=False
    )
    after = again.data_path.stat()
    assert calls == []
    assert again.data_path == nih_cache.data_path
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_labels_and_splits_do_not_force_a_rebuild(nih_cache, nih_paths, monkeypatch):
    calls = count_decodes(monkeypatch)
    relabelled = make_manifest(nih_paths, split="val")
    relabelled.frame["Hernia"] = 1.0
    again = ImageCache.build(
        relabelled, nih_cache.index_path.parent, SIZE, workers=1, progress=False
    )
    assert calls == [] and again.data_path == nih_cache.data_path


def test_changed_manifest_or_size_rebuilds(nih_cache, nih_paths, monkeypatch):
    folder = nih_cache.index_path.parent
    calls = count_decodes(monkeypatch)
    fewer = ImageCache.build(make_manifest(nih_paths[:20]), folder, SIZE, workers=1, progress=False)
    assert len(calls) == 20 and len(fewer) == 20 and fewer.data_path != nih_cache.data_path
    np.testing.assert_array_equal(fewer[5], nih_cache[5])
    calls.clear()
    smaller = ImageCache.build(make_manifest(nih_paths[:3]), folder, 32, workers=1, progress=False)
    assert len(calls) == 3 and smaller[0].shape == (32, 32)
    assert len(ImageCache.open(nih_cache.index_path)) == 30  # other caches in the folder stay valid


def test_replaced_file_rebuilds(tmp_path, monkeypatch):
    paths = write_pngs(tmp_path / "images", 4)
    manifest = make_manifest(paths)
    first = ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=1, progress=False)
    old_row = first[2]
    halves = np.zeros((80, 96), np.uint8)
    halves[:, 48:] = 200
    Image.fromarray(halves).save(paths[2])
    os.utime(paths[2], ns=(0, paths[2].stat().st_mtime_ns + 10**9))
    calls = count_decodes(monkeypatch)
    second = ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=1, progress=False)
    assert len(calls) == 4 and second.key != first.key
    np.testing.assert_array_equal(second[2], to_cache_array(load_image(paths[2]).pixels, SIZE))
    assert second[2][:, :30].max() == 0 and second[2][:, 34:].min() == 200
    assert not np.array_equal(old_row, second[2])
    assert second.original_shapes[2] == (80, 96)


def test_corrupt_images_are_all_listed_and_no_cache_is_left(tmp_path):
    paths = write_pngs(tmp_path / "images", 5)
    broken = tmp_path / "images" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    text = tmp_path / "images" / "notes.png"
    text.write_text("this is not an image")
    manifest = make_manifest([paths[0], broken, *paths[1:], text])
    with pytest.raises(DatasetError) as err:
        ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=2, progress=False)
    message = str(err.value)
    assert "2 of 7 images" in message
    assert "broken.png" in message and "notes.png" in message and "img000.png" not in message
    assert cache_files(tmp_path / "cache") == []


def test_missing_file_is_reported(tmp_path):
    paths = write_pngs(tmp_path / "images", 2)
    paths[1].unlink()
    with pytest.raises(DatasetError, match="img001.png.*do not exist|do not exist.*img001.png"):
        ImageCache.build(make_manifest(paths), tmp_path / "cache", SIZE, workers=1, progress=False)


def test_interrupted_build_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    paths = write_pngs(tmp_path / "images", 12)
    manifest = make_manifest(paths)
    calls = 0

    def dies_midway(source, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 7:
            raise KeyboardInterrupt
        return load_image(source, **kwargs)

    monkeypatch.setattr(cache_module, "load_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=1, progress=False)
    assert cache_files(tmp_path / "cache") == []
    monkeypatch.setattr(cache_module, "load_image", load_image)
    cache = ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=1, progress=False)
    assert len(cache) == 12 and cache[11].any()


def test_killed_build_leftovers_are_ignored_and_removed(tmp_path):
    paths = write_pngs(tmp_path / "images", 3)
    manifest = make_manifest(paths)
    folder = tmp_path / "cache"
    folder.mkdir()
    stem = f"cache-{SIZE}px-{cache_module.cache_key(manifest, SIZE)}"
    dead_pid = 2**22 + 12345  # above the default pid_max, so never a live process
    leftover = folder / f"{stem}.u8.partial-{dead_pid}-abcd1234"
    leftover.write_bytes(b"\x00" * 100)
    # A data file without its index (killed between the two renames) is not a cache either.
    (folder / f"{stem}.u8").write_bytes(b"\x01" * 10)
    cache = ImageCache.build(manifest, folder, SIZE, workers=1, progress=False)
    assert not leftover.exists()
    assert cache_files(folder) == sorted([f"{stem}.json", f"{stem}.u8"])
    np.testing.assert_array_equal(cache[1], to_cache_array(load_image(paths[1]).pixels, SIZE))


def test_truncated_data_file_is_detected_and_rebuilt(tmp_path):
    paths = write_pngs(tmp_path / "images", 3)
    manifest = make_manifest(paths)
    cache = ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=1, progress=False)
    with open(cache.data_path, "r+b") as f:
        f.truncate(SIZE * SIZE)
    with pytest.raises(DatasetError, match="incomplete"):
        ImageCache.open(cache.index_path)
    rebuilt = ImageCache.build(manifest, tmp_path / "cache", SIZE, workers=1, progress=False)
    assert len(rebuilt) == 3 and rebuilt.data_path.stat().st_size == 3 * SIZE * SIZE


def test_cache_pickles_cheaply_and_feeds_dataloader_workers(nih_cache, nih_paths):
    _ = nih_cache[0]  # open the memmap in this process; it must not travel with the pickle
    blob = pickle.dumps(nih_cache)
    assert len(blob) < 5_000
    clone = pickle.loads(blob)
    assert clone._array is None
    np.testing.assert_array_equal(clone[7], nih_cache[7])

    cfg = PreprocessConfig(cache_size=SIZE, input_size=48)
    dataset = CXRDataset(make_manifest(nih_paths), nih_cache, eval_transform(cfg))
    for collate in (None, collate_batch):
        loader = DataLoader(dataset, batch_size=8, shuffle=False, num_workers=2, collate_fn=collate)
        seen = []
        for images, _targets, index in loader:
            expected = eval_tensor(nih_cache.get_batch(index.numpy()), cfg)
            assert torch.equal(images, expected)
            seen.extend(index.tolist())
        assert seen == list(range(30))


def test_full_disk_is_refused_before_writing(tmp_path, monkeypatch):
    paths = write_pngs(tmp_path / "images", 2)
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: SimpleNamespace(free=1000))
    with pytest.raises(DatasetError, match="GiB free"):
        ImageCache.build(make_manifest(paths), tmp_path / "cache", SIZE, workers=1, progress=False)
    assert cache_files(tmp_path / "cache") == []


def test_listing_shows_each_cache_and_opening_marks_it_used(tmp_path):
    folder = tmp_path / "cache"
    cache = ImageCache.build(
        make_manifest(write_pngs(tmp_path / "images", 3)), folder, SIZE, workers=1, progress=False
    )
    week_ago = time.time() - 7 * 86400
    for path in folder.iterdir():
        os.utime(path, (week_ago, week_ago))
    (entry,) = cache_module.list_caches(folder)
    assert (entry.size, entry.images, entry.source, entry.complete) == (
        SIZE,
        3,
        "test manifest",
        True,
    )
    assert entry.nbytes == 3 * SIZE * SIZE + cache.index_path.stat().st_size
    assert entry.last_used == pytest.approx(week_ago, abs=1)
    ImageCache.open(cache.index_path)
    assert cache_module.list_caches(folder)[0].last_used > time.time() - 60


def test_prune_deletes_unused_caches_and_debris_only(tmp_path, capsys):
    from cxr_core.cli.main import main

    folder = tmp_path / "cache"
    old_manifest = make_manifest(write_pngs(tmp_path / "old", 2))
    old = ImageCache.build(old_manifest, folder, SIZE, workers=1, progress=False)
    recent = ImageCache.build(
        make_manifest(write_pngs(tmp_path / "recent", 3)), folder, SIZE, workers=1, progress=False
    )
    month_ago = time.time() - 30 * 86400
    for path in (old.index_path, old.data_path):
        os.utime(path, (month_ago, month_ago))
    orphan = (
        folder / "cache-32px-0123456789abcdef0123.u8"
    )  # killed between writing the data and its index
    orphan.write_bytes(b"\x00" * 32)
    dead = folder / f"cache-32px-0123456789abcdef0123.json.partial-{2**22 + 7}-abcd1234"
    dead.write_text("{")
    assert len(cache_module.list_caches(folder)) == 3

    assert main(["cache", "prune", "--dir", str(folder), "--unused-days", "7", "--dry-run"]) == 0
    assert "Would delete" in capsys.readouterr().out and len(list(folder.iterdir())) == 6

    assert main(["cache", "prune", "--dir", str(folder), "--unused-days", "7"]) == 0
    out = capsys.readouterr().out
    assert old.index_path.stem in out and "interrupted build" in out and "2 cache(s)" in out
    assert cache_files(folder) == sorted([recent.index_path.name, recent.data_path.name])
    np.testing.assert_array_equal(ImageCache.open(recent.index_path)[0], recent[0])
    assert (
        ImageCache.build(old_manifest, folder, SIZE, workers=1, progress=False).key == old.key
    )  # rebuilt on demand

    assert main(["cache", "list", "--dir", str(folder)]) == 0
    assert "2 cache(s)" in capsys.readouterr().out  # the recent one and the rebuilt one
    assert main(["cache", "list", "--dir", str(tmp_path / "nowhere")]) == 2


class _Step:
    """A stand-in cache transform (the real one is the lung masker): keeps pixels above ``floor``."""

    def __init__(self, floor: int, calls: list[int] | None = None) -> None:
        self.floor = floor
        self.calls = calls if calls is not None else []

    @property
    def identity(self) -> str:
        return f"keep-above {self.floor}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(len(images))
        return np.where(images > self.floor, images, 0).astype(np.uint8)


def test_a_transformed_cache_never_shares_a_file_with_the_plain_one(tmp_path, monkeypatch):
    """With/without a step (lung masking) and two different steps are three caches, each reused by key."""
    paths = write_pngs(tmp_path / "images", 70)  # more rows than one transform chunk
    manifest = make_manifest(paths)
    folder = tmp_path / "cache"
    plain = ImageCache.build(manifest, folder, SIZE, workers=1, progress=False)
    calls: list[int] = []
    masked = ImageCache.build(
        manifest, folder, SIZE, workers=1, progress=False, transform=_Step(128, calls)
    )
    assert sum(calls) == 70 and max(calls) == 64  # every row once, in chunks
    assert masked.key != plain.key and masked.data_path != plain.data_path
    assert (plain.transform, masked.transform) == ("", "keep-above 128")
    assert masked.image_ids == plain.image_ids and masked.original_shapes == plain.original_shapes
    for row in (0, 33, 69):
        np.testing.assert_array_equal(masked[row], np.where(plain[row] > 128, plain[row], 0))
    assert (plain.get_batch(range(70)) <= 128).any()  # the plain rows kept their dark pixels

    decodes = count_decodes(monkeypatch)
    calls.clear()
    again = ImageCache.build(
        manifest, folder, SIZE, workers=1, progress=False, transform=_Step(128, calls)
    )
    assert decodes == [] and calls == [] and again.data_path == masked.data_path
    other = ImageCache.build(manifest, folder, SIZE, workers=1, progress=False, transform=_Step(64))
    assert decodes == [] and other.data_path not in (plain.data_path, masked.data_path)
    assert len({p for p in cache_files(folder) if p.endswith(".json")}) == 3
    assert (
        ImageCache.build(manifest, folder, SIZE, workers=1, progress=False).data_path
        == plain.data_path
    )


def test_a_transform_that_changes_the_shape_is_refused(tmp_path):
    class Cropping(_Step):
        def __call__(self, images: np.ndarray) -> np.ndarray:
            return images[:, 1:, 1:]

    manifest = make_manifest(write_pngs(tmp_path / "images", 3))
    with pytest.raises(DatasetError, match="same shape"):
        ImageCache.build(
            manifest, tmp_path / "cache", SIZE, workers=1, progress=False, transform=Cropping(0)
        )
    assert [p for p in cache_files(tmp_path / "cache") if "partial" in p] == []
    assert (
        len([p for p in cache_files(tmp_path / "cache") if p.endswith(".json")]) == 1
    )  # only the plain cache
