"""A split's probabilities computed in chunks: shared by processes and resumable (``cxr evaluate``).

The split's rows are cut into chunks (:mod:`cxr_core.artifacts.shards`); each process
predicts its chunks and keeps each one's uncalibrated float32 probabilities as a ``.npy``
file in ``OUT/.cxr-work/``; rank 0 then joins them in row order, and scoring goes on from
there exactly as for one process (which takes the same path with every chunk). The images
come from the image cache of the whole dataset or of the split when one exists (a training
run's), otherwise from a cache of each chunk, built as it is needed and kept in the cache
folder, so the next evaluation of the same split decodes nothing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.artifacts.run_dir import label_column, prob_column
from cxr_core.artifacts.shards import (
    SINGLE_PROCESS,
    Fingerprint,
    Ranks,
    WorkDir,
    chunk_size,
    file_size,
    log_done,
    log_share,
)
from cxr_core.data.cache import CacheTransform, ImageCache, cache_key, derived_key
from cxr_core.data.dataset import eval_transform
from cxr_core.data.labels import ClassMapping
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.models.checkpoint import Checkpoint
from cxr_core.models.tta import class_probabilities
from cxr_core.utils.atomic import write_atomically
from cxr_core.utils.device import resolve_device

CHUNK_SUFFIX = ".npy"


def cache_probabilities(
    model: torch.nn.Module,
    ckpt: Checkpoint,
    cache: ImageCache,
    rows: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    calibrated: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """(len(rows), C) float32 probabilities of cache ``rows``, batch by batch, in float32
    (no autocast) through ``eval_transform``: what the Predictor computes for the same image."""
    transform = eval_transform(ckpt.preprocess)
    multilabel = ckpt.label_space.multilabel
    temperature = ckpt.card.temperature() if calibrated else None
    out = [np.zeros((0, len(ckpt.card.classes)), dtype=np.float32)]
    starts = range(0, len(rows), batch_size)
    for start in tqdm(
        starts, desc=f"predicting {len(rows)} images", unit="batch", disable=not progress
    ):
        images = torch.from_numpy(cache.get_batch(rows[start : start + batch_size])).unsqueeze(1)
        with torch.inference_mode():
            probs = class_probabilities(
                model,
                transform(images).to(device),
                multilabel=multilabel,
                tta=ckpt.card.tta,
                temperature=temperature,
            )
        out.append(probs.cpu().numpy())
    return np.concatenate(out)


def prediction_frame(
    manifest: Manifest, mapping: ClassMapping, model_classes: Sequence[str], probs: np.ndarray
) -> pd.DataFrame:
    """One row per manifest row: ids, path, ``label:<class>`` (NaN unknown) and float64
    ``prob:<class>`` for the classes model and data share, named as the data names them."""
    frame = manifest.frame[["image_id", "patient_id", "path"]].reset_index(drop=True)
    columns: dict[str, np.ndarray] = {}
    labels = manifest.labels()
    for name in mapping.data_classes:
        columns[label_column(name)] = labels[:, manifest.classes.index(name)]
    for model_class, name in mapping.shared:
        columns[prob_column(name)] = probs[:, list(model_classes).index(model_class)].astype(
            np.float64
        )
    return pd.concat([frame, pd.DataFrame(columns)], axis=1)


class _Images:
    """Where a chunk's cache rows come from: one cache of the whole dataset or split, found
    at the start, or else a cache of each chunk (built when missing, kept in the cache folder)."""

    def __init__(
        self,
        manifest: Manifest,
        part: Manifest,
        cache_dir: str | os.PathLike[str],
        size: int,
        transform: CacheTransform | None,
    ) -> None:
        self.part, self.cache_dir, self.size, self.transform = (
            part,
            Path(cache_dir),
            size,
            transform,
        )
        self.whole = self._existing(manifest)
        if self.whole is None:
            self.whole = self._existing(part)
        self.rows = self.whole.rows_for(part) if self.whole is not None else None

    def _existing(self, manifest: Manifest) -> ImageCache | None:
        key = cache_key(manifest, self.size)
        if self.transform is not None:
            key = derived_key(key, self.transform.identity)
        index = self.cache_dir / f"cache-{self.size}px-{key}.json"
        if not index.is_file():
            return None
        try:
            return ImageCache.open(index)
        except DatasetError:
            return None  # damaged: the chunks build their own

    def chunk(self, start: int, stop: int) -> tuple[ImageCache, np.ndarray]:
        if self.whole is not None:
            return self.whole, self.rows[start:stop]
        rows = self.part.with_frame(self.part.frame.iloc[start:stop])
        cache = ImageCache.build(
            rows, self.cache_dir, self.size, progress=False, transform=self.transform
        )
        return cache, np.arange(stop - start)


def predict_chunk(
    model: torch.nn.Module,
    ckpt: Checkpoint,
    images: _Images,
    bounds: tuple[int, int],
    *,
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """Uncalibrated probabilities of the split's rows ``[start, stop)``."""
    cache, rows = images.chunk(*bounds)
    return cache_probabilities(model, ckpt, cache, rows, batch_size=batch_size, device=device)


def work_dir(out_dir: str | os.PathLike[str]) -> WorkDir:
    """The work folder of an evaluation writing to ``out_dir`` (removed once it has written)."""
    return WorkDir(out_dir, CHUNK_SUFFIX)


def predict_split_chunked(
    ckpt: Checkpoint,
    checkpoint_path: str | os.PathLike[str],
    manifest: Manifest,
    part: Manifest,
    mapping: ClassMapping,
    out_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str],
    ranks: Ranks = SINGLE_PROCESS,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> pd.DataFrame | None:
    """Uncalibrated predictions of ``part`` (a split of ``manifest``) as :func:`prediction_frame`
    on rank 0, None on the other ranks; chunks finished by an earlier launch are reused."""
    work = work_dir(out_dir)
    dev = resolve_device(device)
    masker = lung_masker_for(ckpt.preprocess, dev)
    size = ckpt.preprocess.cache_size
    if ranks.rank == 0:
        fingerprint = (
            Fingerprint("evaluate")
            .add_file(checkpoint_path)
            .add(ckpt.card.tta, masker.identity if masker is not None else "", batch_size)
            .add(cache_key(part, size), part.fingerprint())
            .hexdigest()
        )
        sizes = [file_size(p) for p in part.frame["path"]]
        n = len(part)
        work.prepare(fingerprint, n, chunk_size(n, batch_size), ranks.world_size, weights=sizes)
    ranks.barrier()
    plan = work.read_plan(ranks.world_size)
    log_share("images", ranks, plan)
    mine = plan.chunks_of(ranks.rank)
    started = time.perf_counter()
    if mine:
        images = _Images(manifest, part, cache_dir, size, masker)
        model = ckpt.build_model().to(dev).eval()
        bar = tqdm(
            total=plan.items_of(ranks.rank), desc="predicting", unit="img", disable=not progress
        )
        for chunk in mine:
            bounds = plan.bounds[chunk]
            probs = predict_chunk(model, ckpt, images, bounds, batch_size=batch_size, device=dev)
            write_atomically(work.chunk_path(chunk), lambda tmp, p=probs: _save(tmp, p))
            bar.update(bounds[1] - bounds[0])
        bar.close()
    log_done("images", ranks, plan.items_of(ranks.rank), time.perf_counter() - started)
    ranks.barrier()
    if ranks.rank != 0:
        return None
    probs = np.concatenate([np.load(path) for path in work.chunk_files(plan)])
    return prediction_frame(part, mapping, ckpt.card.classes, probs)


def _save(tmp: Path, probs: np.ndarray) -> None:
    with tmp.open("wb") as handle:
        np.save(handle, probs, allow_pickle=False)
