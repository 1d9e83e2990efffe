"""``cxr predict``'s run over files: one prediction table, shared by processes, resumable.

The files are listed once (by rank 0) and cut into chunks (:mod:`cxr_core.artifacts.shards`);
each process predicts its chunks and writes each as a prediction table in the work folder,
with the heatmaps and lung masks of its files; rank 0 then merges the chunks, in file order,
into ``OUT/predictions.csv``. One process (no torchrun) takes the same path with every
chunk, so a single process and N processes write the same rows in the same order, and a
killed run started again skips the chunks it finished. Heatmaps and lung masks are written
before their chunk's table, so a chunk that exists has all of them.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from cxr_core.artifacts.prediction_table import (
    OUTCOMES,
    PredictionRow,
    merge_prediction_tables,
    read_outcomes,
    write_prediction_table,
)
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
from cxr_core.data.formats.files import list_image_files
from cxr_core.inference.explain import explain_batch, overlay_png
from cxr_core.inference.lungs import mask_png
from cxr_core.inference.predictor import FileResult, Predictor
from cxr_core.inference.table_rows import file_row
from cxr_core.utils.atomic import remove_stale_temp_files, write_atomically

PREDICTIONS_TABLE = "predictions.csv"
LUNG_COLUMNS = ("lung_fraction", "lung_warning")


@dataclass(frozen=True)
class Explanations:
    """Heatmaps to write: the method, and the class to explain (None: every positive finding)."""

    method: str
    class_name: str | None = None


@dataclass(frozen=True)
class RunSummary:
    """What rank 0 reports once the table is written."""

    table: Path
    images: int
    outcomes: Counter[str]  # files per outcome (every outcome present, 0 where none)
    skipped: str  # files in the folders that got no row, by kind ("" when none)


def predict_to_table(
    predictor: Predictor,
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    ranks: Ranks = SINGLE_PROCESS,
    batch_size: int = 16,
    workers: int = 2,
    explain: Explanations | None = None,
    identity: Mapping[str, Any] | None = None,
    progress: bool = True,
    each_result: Callable[[FileResult], None] | None = None,
    resume: bool = True,
    score_anyway: bool = False,
) -> RunSummary | None:
    """Predict the files in ``inputs`` (files and folders, see :func:`list_image_files`) into
    ``OUT/predictions.csv``; returns the summary on rank 0 and None on the other ranks.

    ``identity`` names what else the predictions depend on (checkpoint files, settings): a
    rerun with another identity, other files or files changed on disk starts over instead of
    resuming. ``each_result`` is called with every file's result, its image kept (DICOM and
    PDF deliverables); ``resume=False`` starts over even when finished chunks are there, for
    work outside the table that a skipped chunk would miss.
    """
    out = Path(out_dir)
    work = WorkDir(out, ".csv")
    listing = None
    if ranks.rank == 0:
        if not resume:
            work.discard()
        listing = list_image_files(inputs)
        paths = [os.fspath(p) for p in listing.images]
        sizes = [file_size(p) for p in paths]
        fingerprint = _fingerprint(paths, identity or {}, batch_size, explain)
        size = chunk_size(len(paths), batch_size)
        work.prepare(fingerprint, len(paths), size, ranks.world_size, weights=sizes, inputs=paths)
        _make_folders(out, explain is not None, predictor.gate.lungs is not None)
    ranks.barrier()
    plan = work.read_plan(ranks.world_size)
    log_share("files", ranks, plan)
    paths = list(work.inputs())
    chunks = [(c, plan.bounds[c]) for c in plan.chunks_of(ranks.rank)]
    writer = _ChunkWriter(
        predictor, paths, out, explain, (batch_size, workers, score_anyway), each_result
    )
    started = time.perf_counter()
    with tqdm(
        total=plan.items_of(ranks.rank), desc="predict", unit="img", disable=not progress
    ) as bar:
        for chunk, (start, stop) in chunks:
            writer.write(work.chunk_path(chunk), paths[start:stop], bar)
    log_done("files", ranks, plan.items_of(ranks.rank), time.perf_counter() - started)
    ranks.barrier()
    if ranks.rank != 0:
        return None
    parts = work.chunk_files(plan)
    table = merge_prediction_tables(out / PREDICTIONS_TABLE, parts)
    counts = _outcome_counts(parts)
    work.discard()
    return RunSummary(table, len(paths), counts, listing.summary() if listing else "")


def _fingerprint(
    paths: Sequence[str],
    identity: Mapping[str, Any],
    batch_size: int,
    explain: Explanations | None,
) -> str:
    fingerprint = Fingerprint("predict").add(dict(identity), batch_size, explain)
    for value in identity.values():
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            fingerprint.add_file(value)
    for path in paths:
        fingerprint.add_file(path)
    return fingerprint.hexdigest()


def _make_folders(out: Path, heatmaps: bool, lungs: bool) -> None:
    """Output folders, swept once of temporary files left by a killed run (see ``sweep``)."""
    for folder, wanted in ((out, True), (out / "heatmaps", heatmaps), (out / "lungs", lungs)):
        if wanted:
            folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(folder)


class _ChunkWriter:
    """Writes chunks of one rank: rows predicted file by file, with their images' extra files."""

    def __init__(
        self,
        predictor: Predictor,
        paths: Sequence[str],
        out: Path,
        explain: Explanations | None,
        settings: tuple[int, int, bool],
        each_result: Callable[[FileResult], None] | None = None,
    ) -> None:
        self.predictor = predictor
        self.each_result = each_result
        self.out = out
        self.explain = explain
        self.batch_size, self.workers, self.score_anyway = settings
        self.with_lungs = predictor.gate.lungs is not None
        self.names = output_names(paths) if explain is not None or self.with_lungs else {}
        self.explain_class = (
            predictor.classes[predictor.label_space.index(explain.class_name)]
            if explain is not None and explain.class_name is not None
            else None
        )

    def write(self, target: Path, paths: Sequence[str], bar: tqdm) -> None:
        write_prediction_table(
            target,
            self.predictor.classes,
            self._rows(paths, bar),
            labels=False,
            thresholds=self.predictor.label_space.multilabel,
            extra=LUNG_COLUMNS if self.with_lungs else (),
        )

    def _rows(self, paths: Sequence[str], bar: tqdm) -> Iterator[PredictionRow]:
        multilabel = self.predictor.label_space.multilabel
        results = self.predictor.iter_predict_files(
            paths,
            batch_size=self.batch_size,
            workers=self.workers,
            keep_images=self.explain is not None or self.each_result is not None,
            score_anyway=self.score_anyway,
        )
        for result in results:
            if self.each_result is not None:
                self.each_result(result)
            extra = self._lung_mask(result)
            self._heatmaps(result)
            yield file_row(result, multilabel=multilabel, extra=extra)
            result.image = result.lungs = None
            bar.update(1)

    def _lung_mask(self, result: FileResult) -> dict[str, str]:
        """Lung columns of the row; the mask PNG when the gate segmented the image."""
        if not self.with_lungs:
            return {}
        if result.lungs is None:
            return dict.fromkeys(LUNG_COLUMNS, "")
        path = self.out / "lungs" / f"{self.names[result.path]}.png"
        png = mask_png(result.lungs.mask)
        write_atomically(path, lambda tmp: tmp.write_bytes(png), sweep=False)
        return {
            "lung_fraction": repr(round(result.lungs.fraction, 6)),
            "lung_warning": result.lungs.check.warning or "",
        }

    def _heatmaps(self, result: FileResult) -> None:
        pred = result.prediction
        if pred is None or self.explain is None:
            return
        targets = [self.explain_class] if self.explain_class else pred.positive
        maps = explain_batch(
            self.predictor, [result.image] * len(targets), targets, self.explain.method
        )
        for cls, heatmap in zip(targets, maps):
            png = overlay_png(result.image.pixels, heatmap)
            path = self.out / "heatmaps" / f"{self.names[result.path]}__{_slug(cls)}.png"
            write_atomically(path, lambda tmp, png=png: tmp.write_bytes(png), sweep=False)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def output_names(paths: Sequence[str]) -> dict[str, str]:
    """File stem per image for its heatmaps and lung mask, suffixed with its row number only
    where stems collide; computed over the whole run, so every rank names files alike."""
    stems = [Path(p).stem for p in paths]
    counts = Counter(stems)
    return {
        p: _slug(stem) if counts[stem] == 1 else f"{_slug(stem)}_{i + 1}"
        for i, (p, stem) in enumerate(zip(paths, stems))
    }


def _outcome_counts(parts: Sequence[Path]) -> Counter[str]:
    """Files per outcome, chunk by chunk."""
    counts: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
    for part in parts:
        counts.update(read_outcomes(part)["outcome"])
    return counts
