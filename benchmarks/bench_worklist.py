"""Worklist and report timings with the bundled nih14 model (and lung model) on real films.

1. Worklist, cold cache: a folder of ``--films`` NIH films scored by :class:`WorklistJob`; the time
   from start to the first scored film (goal: first rows within 3 s) and the films per second.
   Then the same folder reopened with the cache on disk (goal: every film from the cache, the
   whole worklist back within 3 s).
2. Deliverables of one film at real size: an NIH film enlarged to 2560x2560 and stored as 16-bit
   DICOM (12 bits stored); the median times to score it (the Predictor's, reported beside), to
   compute the called findings' heatmaps, to build its SR, overlay SC and lung SEG, and its PDF
   (goal: heatmaps + DICOM + PDF within 5 s on this machine's shared CPU).

    PYTHONPATH=. python benchmarks/bench_worklist.py --films 50

Prints medians and "met" / "NOT met"; the machine's load average is printed beside them, since
the CPU is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))
FIRST_ROWS_GOAL_S = 3.0
DELIVERABLES_GOAL_S = 5.0


def verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "NOT met"


def worklist(predictor, films: list[Path], cache_dir: Path, digest: str, lung: str) -> None:
    from cxr_core.triage.cache import ScoreCache
    from cxr_core.triage.items import folder_items
    from cxr_core.triage.job import WorklistJob

    folder = cache_dir.parent / "films"
    folder.mkdir()
    for film in films:
        (folder / film.name).symlink_to(film)
    for label in ("cold cache", "reopened"):
        job = WorklistJob(predictor, folder_items(folder), ScoreCache(cache_dir, digest, lung))
        job.start().wait()
        progress = job.snapshot()
        cached = sum(e.cached for e in progress.entries)
        print(
            f"worklist {label}: {progress.done} films, first after {progress.first_entry_s:.2f} s "
            f"({verdict(progress.first_entry_s, FIRST_ROWS_GOAL_S)}), all after {progress.elapsed_s:.1f} s "
            f"({progress.done / progress.elapsed_s:.1f} films/s), {cached} from the cache"
        )
    print(
        f"worklist reopened, whole list back within {FIRST_ROWS_GOAL_S:.0f} s: "
        f"{verdict(progress.elapsed_s, FIRST_ROWS_GOAL_S)}"
    )


def deliverables(predictor, lungs, png: Path, workdir: Path, repeats: int) -> None:
    from cxr_core.reporting.dicom_source import read_source_header
    from cxr_core.reporting.export import dicom_objects
    from cxr_core.reporting.pdf import build_pdf
    from cxr_core.reporting.scoring import film_study_result, score_film
    from cxr_core.reporting.study import ReportContext
    from tests.dicom_fixtures import film_dataset, new_ids

    path = workdir / "film.dcm"
    film_dataset(png, new_ids("B1", "B1"), scale=10).save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    context = ReportContext.of_run(
        predictor, REPO / "checkpoints/nih14/model.safetensors", lungs=lungs
    )
    times: dict[str, list[float]] = {"score": [], "heatmaps": [], "dicom": [], "pdf": []}
    for _ in range(repeats):
        start = time.perf_counter()
        scored = score_film(predictor, data, "film.dcm")
        times["score"].append(time.perf_counter() - start)
        start = time.perf_counter()
        result = film_study_result(predictor, context, scored)
        times["heatmaps"].append(time.perf_counter() - start)
        start = time.perf_counter()
        objects = dicom_objects(result, read_source_header(data))
        times["dicom"].append(time.perf_counter() - start)
        start = time.perf_counter()
        build_pdf(result, read_source_header(data))
        times["pdf"].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    total = medians["heatmaps"] + medians["dicom"] + medians["pdf"]
    print(
        f"one 2560x2560 16-bit DICOM film ({len(result.called)} findings called, "
        f"{len(objects.items())} DICOM objects): "
        + ", ".join(f"{k} {v:.2f} s" for k, v in medians.items())
        + f"; heatmaps + DICOM + PDF {total:.1f} s ({verdict(total, DELIVERABLES_GOAL_S)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from cxr_core.artifacts.catalog import checkpoint_digest
    from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter
    from cxr_core.inference.predictor import Predictor

    checkpoint = REPO / "checkpoints" / "nih14" / "model.safetensors"
    pngs = sorted((SHARED / "nih14" / "images").glob("*.png"))
    if len(pngs) < args.films:
        print(f"needs {args.films} NIH films under {SHARED / 'nih14' / 'images'}")
        return 1
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    lungs = LungSegmenter.from_path(DEFAULT_LUNG_CHECKPOINT, device="cpu")
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", lungs=lungs)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digests = checkpoint_digest(checkpoint), checkpoint_digest(DEFAULT_LUNG_CHECKPOINT)
        worklist(predictor, pngs[: args.films], work / "cache", *digests)
        deliverables(predictor, lungs, pngs[0], work, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
