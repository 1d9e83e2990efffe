"""Training-data throughput: decode-every-epoch (ImageFolder style) vs the memory-mapped cache.

Both pipelines produce the same thing (random rotation <= 20 deg, random resized crop to 224,
gray replicated to 3 channels, ImageNet normalisation) through a DataLoader with the same
number of workers and batch size, and are timed epoch by epoch in alternation so that load
from other processes on a shared machine hits both alike. Cache build time is reported
separately (it is paid once, not per epoch). Besides images/s, CPU-ms per image (main
process + DataLoader workers) is printed: on a shared machine it is the steadier measure of
what each pipeline costs. The floor for both is shipping float32 (3, 224, 224) batches from
the workers through shared memory (~0.4 CPU-ms/image of page faults on the 2-core machine).

  (a) baseline: per image, PIL decode -> convert("L") -> resize to cache size -> torchvision
      v2 RandomRotation + RandomResizedCrop on the PIL image -> tensor -> normalise
  (b) cached:   CXRDataset over ImageCache with train_transform (batched affine resampling)
                and collate_batch (batches built in shared memory, not copied again)
  (c) for reference, the cache with per-image torchvision.transforms.v2 on uint8 tensors,
      showing what batching the augmentation adds on top of not decoding

Usage: python benchmarks/bench_data_pipeline.py [--root ../shared/data/nih14] [--images 2048] [--epochs 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cxr_core.data.cache import ImageCache
from cxr_core.data.dataset import (
    AugmentConfig,
    CXRDataset,
    collate_batch,
    train_transform,
)
from cxr_core.data.labels import NIH14, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig

REPO = Path(__file__).resolve().parents[1]


def nih_manifest(root: Path, limit: int) -> Manifest:
    """The first ``limit`` NIH images (sorted by name) with their labels from Data_Entry_2017.csv."""
    entries = pd.read_csv(root / "Data_Entry_2017.csv").set_index("Image Index")
    files = sorted(p for p in (root / "images").glob("*.png") if p.name in entries.index)[:limit]
    if not files:
        raise SystemExit(
            f"no NIH images listed in Data_Entry_2017.csv found under {root / 'images'}"
        )
    rows = []
    for path in files:
        entry = entries.loc[path.name]
        findings = {canonical_name(f) for f in str(entry["Finding Labels"]).split("|")}
        row = {
            "image_id": path.name,
            "path": str(path),
            "patient_id": str(entry["Patient ID"]),
            "view": str(entry["View Position"]),
            "split": "train",
        }
        row.update({c: float(c in findings) for c in NIH14.classes})
        rows.append(row)
    return Manifest(pd.DataFrame(rows), NIH14, source=str(root))


class _PerImageV2:
    """The usual torchvision pipeline: one image at a time, on PIL images or uint8 tensors."""

    def __init__(self, cfg: PreprocessConfig, aug: AugmentConfig) -> None:
        self.cfg = cfg
        self.pipeline = v2.Compose(
            [
                v2.RandomRotation(aug.rotation, interpolation=v2.InterpolationMode.BILINEAR),
                v2.RandomResizedCrop(
                    cfg.input_size, scale=aug.crop_scale, ratio=aug.crop_ratio, antialias=True
                ),
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.RGB(),
                v2.Normalize(cfg.mean, cfg.std),
            ]
        )

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        return self.pipeline(image)


class DecodeEveryEpoch(Dataset):
    """ImageFolder-style: every access decodes the PNG again."""

    def __init__(self, manifest: Manifest, cfg: PreprocessConfig, aug: AugmentConfig) -> None:
        self.paths = manifest.frame["path"].tolist()
        self.targets = torch.from_numpy(manifest.labels())
        self.size = cfg.cache_size
        self.transform = _PerImageV2(cfg, aug)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        with Image.open(self.paths[i]) as im:
            gray = im.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        return self.transform(gray), self.targets[i].clone(), i


def cpu_seconds(loader: DataLoader) -> float:
    """CPU time used so far by this process and the loader's (persistent) worker processes.

    On a machine shared with other jobs, wall-clock rates swing with their load; CPU time per
    image is what each pipeline itself costs, so both are reported.
    """
    total = time.process_time()
    iterator = getattr(loader, "_iterator", None)
    for worker in getattr(iterator, "_workers", []):
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_epoch(loader: DataLoader) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds) of one pass over the loader."""
    cpu, start = cpu_seconds(loader), time.perf_counter()
    seen = 0
    for images, _targets, index in loader:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 224, 224)
        seen += len(index)
    return seen, time.perf_counter() - start, cpu_seconds(loader) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=REPO.parent / "shared" / "data" / "nih14")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: a temporary folder, removed afterwards",
    )
    parser.add_argument(
        "--skip-per-image", action="store_true", help="skip (c), the per-image v2 reference"
    )
    args = parser.parse_args()
    torch.set_num_threads(
        1
    )  # the DataLoader workers do the work; the main process only receives batches

    cfg, aug = PreprocessConfig(), AugmentConfig()
    manifest = nih_manifest(args.root, args.images)
    print(
        f"{len(manifest)} NIH images from {args.root}; batch {args.batch_size}, {args.workers} "
        f"workers, {args.epochs} epochs"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        start = time.perf_counter()
        cache = ImageCache.build(manifest, cache_dir, cfg.cache_size, progress=False)
        build = time.perf_counter() - start
        start = time.perf_counter()
        ImageCache.build(manifest, cache_dir, cfg.cache_size, progress=False)
        reuse = time.perf_counter() - start
        print(
            f"cache build: {build:.1f} s ({len(manifest) / build:.0f} images/s, once); reopening "
            f"unchanged cache: {reuse * 1e3:.0f} ms"
        )

        datasets = {
            "(a) decode every epoch": DecodeEveryEpoch(manifest, cfg, aug),
            "(b) cache + batched transform": CXRDataset(manifest, cache, train_transform(cfg, aug)),
        }
        if not args.skip_per_image:
            datasets["(c) cache + per-image v2"] = CXRDataset(
                manifest, cache, _PerImageV2(cfg, aug)
            )
        loaders = {
            name: DataLoader(
                ds,
                batch_size=args.batch_size,
                shuffle=True,
                num_workers=args.workers,
                persistent_workers=args.workers > 0,
                collate_fn=collate_batch if isinstance(ds, CXRDataset) else None,
            )
            for name, ds in datasets.items()
        }
        totals = {name: np.zeros(3) for name in loaders}
        for loader in loaders.values():  # warm-up: start workers, touch page cache
            for _ in zip(range(2), loader):
                pass
        for epoch in range(args.epochs):
            for name, loader in loaders.items():
                seen, wall, cpu = run_epoch(loader)
                totals[name] += (seen, wall, cpu)
                print(
                    f"  epoch {epoch + 1} {name:32s} {seen / wall:6.0f} images/s  {cpu / seen * 1e3:5.2f} CPU-ms/image"
                )
        del loaders

    print()
    base = "(a) decode every epoch"
    for name, (seen, wall, cpu) in totals.items():
        print(f"{name:32s} {seen / wall:6.0f} images/s  {cpu / seen * 1e3:5.2f} CPU-ms/image")
    rate = {name: seen / wall for name, (seen, wall, _) in totals.items()}
    cost = {name: cpu / seen for name, (seen, _, cpu) in totals.items()}
    for name in totals:
        if name != base:
            print(
                f"{name} vs {base}: {rate[name] / rate[base]:.1f}x images/s, "
                f"{cost[base] / cost[name]:.1f}x less CPU per image"
            )
    print(
        f"load average during run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    main()
