"""Opening a gallery of 50 films on real film sizes: goal <= 1.5 s once thumbnails are cached.

Makes 50 radiographs at a real film size (NIH images upscaled to 2,500 x 2,048, written as 16-bit
DICOM, 12 bits stored) and an evaluation run over them, then times what opening the Performance
page's gallery costs:

* cold: listing the films (most wrong first), the readers' calls (a review database with one
  session) and making the 50 thumbnails (each film decoded once);
* warm (the goal): the same with the thumbnails cached on disk, plus reading their bytes (what
  the browser is sent) and Streamlit drawing the grid (``dashboard.gallery_view.film_grid`` run
  under AppTest, the script a browser runs).

Medians of ``--repeats`` warm runs, measured in the same process.

    PYTHONPATH=. python benchmarks/bench_gallery.py [--films 50] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 1.5
FILM_SIZE = (2500, 2048)


def write_films(folder: Path, count: int) -> list[Path]:
    """``count`` 16-bit DICOM films at FILM_SIZE, made from real NIH radiographs."""
    import cv2
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from cxr_core.data.imaging import load_image

    sources = sorted((REPO.parent / "shared" / "data" / "nih14" / "images").glob("*.png"))[:count]
    paths = []
    for i, source in enumerate(sources):
        small = load_image(source).pixels
        big = cv2.resize(small, FILM_SIZE[::-1], interpolation=cv2.INTER_CUBIC)
        pixels = np.clip(np.round(big * 4095), 0, 4095).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
        ds.Modality = "DX"
        ds.set_pixel_data(pixels, "MONOCHROME2", 12)
        path = folder / f"film_{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def make_run(folder: Path, films: list[Path]):
    from cxr_core.artifacts.catalog import EvalRun
    from cxr_core.metrics import evaluation_report

    rng = np.random.default_rng(0)
    labels = (rng.random(len(films)) < 0.4).astype(float)
    probs = np.clip(0.3 + 0.3 * labels + rng.normal(0, 0.25, len(films)), 0.01, 0.99)
    frame = pd.DataFrame(
        {
            "image_id": [p.name for p in films],
            "patient_id": [f"p{i}" for i in range(len(films))],
            "path": [str(p) for p in films],
            "label:Effusion": labels,
            "prob:Effusion": probs,
        }
    )
    report = evaluation_report(
        labels[:, None], probs[:, None], ["Effusion"], "multilabel", n_boot=0
    )
    return EvalRun("val", folder, ("Effusion",), frame, report)


def gallery_data(run, store, thumbs: Path) -> tuple[pd.DataFrame, dict, list]:
    from cxr_core.artifacts.thumbnails import thumbnails
    from cxr_core.evaluation.gallery import GallerySelection, gallery_films, reader_calls
    from cxr_core.evaluation.saved_runs import run_decisions

    films = gallery_films(run, GallerySelection("Effusion"), run_decisions(run, True))
    calls = reader_calls(store, str(run.dir), run, "Effusion", viewer="bench")
    small = thumbnails(films["path"].tolist(), thumbs)
    return films, calls, small


GRID_SCRIPT = """
import pickle
from dashboard.gallery_view import film_grid
with open({data!r}, "rb") as handle:
    films, calls = pickle.load(handle)
film_grid(films, calls)
"""


def render_seconds(films: pd.DataFrame, calls: dict, folder: Path) -> float:
    """Streamlit drawing the grid of thumbnails with their captions and buttons (AppTest)."""
    import pickle

    from streamlit.testing.v1 import AppTest

    data = folder / "grid.pkl"
    data.write_bytes(pickle.dumps((films, calls)))
    at = AppTest.from_string(GRID_SCRIPT.format(data=str(data)), default_timeout=300)
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise RuntimeError([e.value for e in at.exception])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from cxr_core.artifacts.review_store import ReviewStore

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["CXR_THUMBNAIL_DIR"] = str(folder / "thumbs")
        os.environ["CXR_DATA_ROOT"] = str(folder)
        start = time.perf_counter()
        films = write_films(folder, args.films)
        print(
            f"wrote {len(films)} films of {FILM_SIZE[1]} x {FILM_SIZE[0]} px, 16-bit DICOM "
            f"({time.perf_counter() - start:.1f} s)"
        )
        run = make_run(folder, films)
        store = ReviewStore(folder / "review")
        session = store.create_session("bench", str(folder), "val", classes=["Effusion"])
        for film in films[:10]:
            store.record(session.id, film.name, "Effusion", reviewer="A", finding="present")
        start = time.perf_counter()
        gallery_data(run, store, folder / "thumbs")
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            shown, calls, small = gallery_data(run, store, folder / "thumbs")
            sent = sum(len(p.read_bytes()) for p in small if p is not None)
            warm.append(time.perf_counter() - start + render_seconds(shown, calls, folder))
        median = statistics.median(warm)
        print(f"cold (50 thumbnails made): {cold:.2f} s")
        print(
            f"warm (cached thumbnails, {sent / 1024:.0f} kB sent, grid drawn): median {median:.2f} s "
            f"of {args.repeats} ({', '.join(f'{w:.2f}' for w in warm)})"
        )
        print(
            f"goal: gallery of {len(films)} films <= {GOAL_S} s warm: "
            + ("met" if median <= GOAL_S else "NOT met")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
