"""A generated NIH-style archive of any size: one label file, a few thousand tiny films.

``make_archive(root, rows)`` writes ``root/Data_Entry_2017.csv`` with ``rows`` rows (NIH
columns: Image Index, Finding Labels drawn at NIH-like prevalences, Patient ID with about
three films per patient, View Position, Patient Age, Patient Gender) and ``root/images/``
holding one name per row. The names are hard links to ``DISTINCT`` tiny grayscale PNGs
(64 px, drawn once), so a million rows cost a million directory entries, not a million
files' worth of disk. ``root_with_test_list`` adds a folder whose ``test_list.txt`` puts
every row in the test split, for evaluating all rows at once.

Used by ``benchmarks/bench_million_rows.py``; run alone to keep an archive for profiling:
``python benchmarks/synthetic_archive.py /tmp/archive 100000``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr_core.data.labels import NIH14

DISTINCT = 2000
SIZE = 64
FILMS_PER_PATIENT = 3
# NIH ChestX-ray14 prevalences (share of films), in NIH14.classes order.
PREVALENCE = (
    0.103,
    0.025,
    0.119,
    0.177,
    0.052,
    0.056,
    0.013,
    0.047,
    0.042,
    0.021,
    0.022,
    0.015,
    0.030,
    0.002,
)


def _films(folder: Path, rng: np.random.Generator) -> list[Path]:
    """``DISTINCT`` smooth random films (a blurred noise field with two darker 'lungs')."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    lungs = np.exp(-(((xx - 0.3) ** 2 + (yy - 0.5) ** 2) / 0.02)) + np.exp(
        -(((xx - 0.7) ** 2 + (yy - 0.5) ** 2) / 0.02)
    )
    paths = []
    for i in range(DISTINCT):
        noise = rng.normal(0, 1, (SIZE // 8, SIZE // 8))
        field = np.kron(noise, np.ones((8, 8)))
        film = np.clip(140 + 25 * field - 80 * lungs + rng.normal(0, 6, (SIZE, SIZE)), 0, 255)
        path = folder / f"film_{i:05d}.png"
        Image.fromarray(film.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def label_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """The NIH label table of ``rows`` films (vectorised: a million rows take seconds)."""
    rng = np.random.default_rng(seed)
    flags = rng.random((rows, len(NIH14.classes))) < np.asarray(PREVALENCE)
    names = np.asarray(NIH14.classes, dtype=object)
    findings = ["|".join(names[row]) or "No Finding" for row in flags]
    patient = np.arange(rows) // FILMS_PER_PATIENT
    film = np.arange(rows) % FILMS_PER_PATIENT
    return pd.DataFrame(
        {
            "Image Index": [f"{p:08d}_{f:03d}.png" for p, f in zip(patient, film)],
            "Finding Labels": findings,
            "Follow-up #": film,
            "Patient ID": patient + 1,
            "Patient Age": rng.integers(1, 95, rows),
            "Patient Gender": rng.choice(["M", "F"], rows),
            "View Position": rng.choice(["PA", "AP"], rows, p=[0.6, 0.4]),
        }
    )


def make_archive(root: Path, rows: int, seed: int = 0) -> Path:
    """``root`` with the label file and one linked film per row (reused when already made)."""
    root = Path(root)
    done = root / ".complete"
    if done.is_file() and int(done.read_text()) == rows:
        return root
    frame = label_frame(rows, seed)
    films = _films(root / "films", np.random.default_rng(seed))
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(frame["Image Index"]):
        target = images / name
        if not target.exists():
            os.link(films[i % DISTINCT], target)
    frame.to_csv(root / "Data_Entry_2017.csv", index=False)
    done.write_text(str(rows))
    return root


def root_with_test_list(root: Path) -> Path:
    """A folder sharing ``root``'s labels and images whose test_list.txt names every film."""
    root = Path(root)
    every = root / "all_test"
    every.mkdir(exist_ok=True)
    for name in ("Data_Entry_2017.csv", "images"):
        if not (every / name).exists():
            (every / name).symlink_to(root / name)
    names = pd.read_csv(root / "Data_Entry_2017.csv", usecols=["Image Index"])["Image Index"]
    (every / "test_list.txt").write_text("\n".join(names) + "\n")
    return every


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("rows", type=int)
    args = parser.parse_args()
    started = time.perf_counter()
    make_archive(args.root, args.rows)
    print(f"{args.root}: {args.rows} rows in {time.perf_counter() - started:.1f} s")
