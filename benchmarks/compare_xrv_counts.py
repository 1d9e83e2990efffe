"""Counts of every label file both tools read: cxr's adapters against torchxrayvision 1.5.7's.

For each format with a torchxrayvision dataset class, both read the same label file and this
prints images, patients and positives per finding side by side, with the difference. Neither
tool needs the images for counting: cxr reads with ``check_files=False`` (``--labels-only``),
torchxrayvision gets an empty image folder. torchxrayvision is built with ``views=["*"]`` and
``unique_patients=False`` so that it keeps every image, as ``cxr data inspect`` does by default.
Finding names are compared after cxr's harmonisation (``Effusion`` = ``Pleural Effusion``).
The README's format table explains every difference this prints.

    python benchmarks/compare_xrv_counts.py [--labels ../shared/data/labels] [--only padchest,rsna-pneumonia]

Needs torchxrayvision (requirements-dev.txt) and the label files of ../shared/data/labels.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_core.data.formats import load_dataset  # noqa: E402
from cxr_core.data.labels import canonical_name  # noqa: E402
from cxr_core.data.manifest import Manifest  # noqa: E402

DEFAULT_LABELS = REPO.parent / "shared" / "data" / "labels"
MIMIC_FIXTURE = REPO / "tests" / "data" / "formats" / "fixtures" / "mimic_cxr"
MONTGOMERY = REPO.parent / "shared" / "data" / "lungmasks" / "montgomery"


@dataclass
class Counts:
    images: int
    patients: int | None
    positives: dict[str, int]


@dataclass
class Case:
    """One label file read by both tools: cxr's loader call and torchxrayvision's constructor."""

    fmt: str
    ours: Callable[[Path], Manifest]
    theirs: Callable[[Path, str], object]
    note: str = ""
    # The column of torchxrayvision's table holding cxr's image ids, for formats where it leaves out
    # images: cxr's counts are then also shown on the images it keeps, isolating label differences.
    id_column: str | None = None


def ours_counts(manifest: Manifest) -> Counts:
    labels = manifest.labels()
    return Counts(
        images=len(manifest),
        patients=int(manifest.frame["patient_id"].nunique()),
        positives={c: int(np.sum(labels[:, i] == 1)) for i, c in enumerate(manifest.classes)},
    )


def xrv_counts(dataset: object) -> Counts:
    labels = np.asarray(dataset.labels, dtype=np.float64)
    csv = dataset.csv
    patients = int(csv["patientid"].nunique()) if "patientid" in csv else None
    return Counts(
        images=len(labels),
        patients=patients,
        positives={
            canonical_name(str(p)): int(np.sum(labels[:, i] == 1))
            for i, p in enumerate(dataset.pathologies)
        },
    )


def _cases(xrv: object) -> list[Case]:
    d = xrv.datasets
    every = {"views": ["*"]}
    return [
        Case(
            "nih",
            lambda L: load_dataset(L / "Data_Entry_2017_v2020.csv.gz", "nih", check_files=False),
            lambda L, img: d.NIH_Dataset(
                img,
                csvpath=str(L / "Data_Entry_2017_v2020.csv.gz"),
                bbox_list_path=str(L / "BBox_List_2017.csv.gz"),
                unique_patients=False,
                **every,
            ),
        ),
        Case(
            "nih-expert",
            lambda L: load_dataset(
                L / "google2019_nih-chest-xray-labels.csv.gz", "nih-expert", check_files=False
            ),
            lambda L, img: d.NIH_Google_Dataset(
                img,
                csvpath=str(L / "google2019_nih-chest-xray-labels.csv.gz"),
                unique_patients=False,
                **every,
            ),
        ),
        Case(
            "chexpert",
            lambda L: load_dataset(
                L / "chexpert_train.csv.gz",
                "chexpert",
                policy="ignore",
                blank="unknown",
                check_files=False,
            ),
            lambda L, img: d.CheX_Dataset(
                img, csvpath=str(L / "chexpert_train.csv.gz"), unique_patients=False, **every
            ),
            "cxr with policy=ignore, blank=unknown (torchxrayvision's reading)",
        ),
        Case(
            "mimic-cxr",
            lambda L: load_dataset(
                MIMIC_FIXTURE, "mimic-cxr", policy="ignore", blank="unknown", check_files=False
            ),
            lambda L, img: d.MIMIC_Dataset(
                img,
                csvpath=str(MIMIC_FIXTURE / "mimic-cxr-2.0.0-chexpert.csv"),
                metacsvpath=str(MIMIC_FIXTURE / "mimic-cxr-2.0.0-metadata.csv"),
                unique_patients=False,
                **every,
            ),
            "the test fixture (MIMIC-CXR is not in ../shared); cxr with policy=ignore, blank=unknown",
            id_column="dicom_id",
        ),
        Case(
            "padchest",
            lambda L: load_dataset(
                L / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
                "padchest",
                check_files=False,
            ),
            lambda L, img: d.PC_Dataset(
                img,
                csvpath=str(L / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"),
                unique_patients=False,
                **every,
            ),
            id_column="ImageID",
        ),
        Case(
            "rsna-pneumonia",
            lambda L: load_dataset(
                L / "kaggle_stage_2_train_labels.csv.zip", "rsna-pneumonia", check_files=False
            ),
            lambda L, img: d.RSNA_Pneumonia_Dataset(
                img,
                csvpath=str(L / "kaggle_stage_2_train_labels.csv.zip"),
                dicomcsvpath=str(L / "kaggle_stage_2_train_images_dicom_headers.csv.gz"),
                **every,
            ),
        ),
        Case(
            "siim-acr",
            lambda L: load_dataset(
                L / "siim-pneumothorax-train-rle.csv.gz", "siim-acr", check_files=False
            ),
            lambda L, img: d.SIIM_Pneumothorax_Dataset(
                img, csvpath=str(L / "siim-pneumothorax-train-rle.csv.gz")
            ),
        ),
        Case(
            "vindr-cxr",
            lambda L: load_dataset(L / "vinbigdata-train.csv.gz", "vindr-cxr", check_files=False),
            lambda L, img: d.VinDr_Dataset(img, csvpath=str(L / "vinbigdata-train.csv.gz")),
            "cxr with consensus=any (a finding any reader marked), torchxrayvision's reading",
        ),
        Case(
            "openi",
            lambda L: load_dataset(
                L / "NLMCXR_reports.tgz", "openi", mesh="automatic", check_files=False
            ),
            lambda L, img: d.Openi_Dataset(
                img,
                xmlpath=str(L / "NLMCXR_reports.tgz"),
                dicomcsv_path=str(L / "nlmcxr_dicom_metadata.csv.gz"),
                unique_patients=False,
                **every,
            ),
            "cxr with mesh=automatic (torchxrayvision's terms); cxr's default reads the major MeSH terms",
        ),
        Case(
            "nlm-tb",
            lambda L: load_dataset(MONTGOMERY, "nlm-tb"),
            lambda L, img: d.NLMTB_Dataset(_montgomery_png(img), views=["*"]),
            "../shared/data/lungmasks/montgomery (images linked as CXR_png/ for torchxrayvision)",
        ),
    ]


def _montgomery_png(folder: str) -> str:
    png = Path(folder) / "tb" / "CXR_png"
    png.mkdir(parents=True, exist_ok=True)
    for image in sorted((MONTGOMERY / "images").glob("*.png")):
        if not (png / image.name).exists():
            (png / image.name).symlink_to(image)
    return str(png.parent)


def compare(case: Case, labels: Path, xrv: object) -> tuple[list[tuple], list[tuple] | None]:
    """Rows (what, cxr, torchxrayvision) of images, patients and positives per finding; and, when
    torchxrayvision leaves images out, the same with cxr restricted to the images it keeps."""
    manifest = case.ours(labels)
    with (
        tempfile.TemporaryDirectory() as img,
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        dataset = case.theirs(labels, img)
    theirs = xrv_counts(dataset)
    rows = _rows(ours_counts(manifest), theirs)
    if case.id_column is None or theirs.images == len(manifest):
        return rows, None
    kept = set(dataset.csv[case.id_column].astype(str))
    restricted = manifest.with_frame(manifest.frame[manifest.frame["image_id"].isin(kept)])
    return rows, _rows(ours_counts(restricted), theirs)


def _rows(ours: Counts, theirs: Counts) -> list[tuple[str, object, object]]:
    rows: list[tuple[str, object, object]] = [
        ("images", ours.images, theirs.images),
        ("patients", ours.patients, theirs.patients if theirs.patients is not None else "-"),
    ]
    for name in dict.fromkeys([*ours.positives, *theirs.positives]):
        rows.append((name, ours.positives.get(name, "-"), theirs.positives.get(name, "-")))
    return rows


def _print(case: Case, rows: list[tuple[str, object, object]]) -> int:
    print(f"\n== {case.fmt}" + (f"  ({case.note})" if case.note else ""))
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'cxr':>8}  {'xrv':>8}  diff")
    differ = 0
    for what, a, b in rows:
        diff = a - b if isinstance(a, int) and isinstance(b, int) else ""
        differ += bool(diff)
        print(f"{what:{width}}  {a!s:>8}  {b!s:>8}  {diff if diff else ''}")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--labels", type=Path, default=DEFAULT_LABELS, help="folder of the label files"
    )
    parser.add_argument("--only", default="", help="comma-separated format names (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torchxrayvision as xrv

    print(f"torchxrayvision {xrv.__version__}; label files in {args.labels}")
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    total = 0
    for case in _cases(xrv):
        if wanted and case.fmt not in wanted:
            continue
        rows, restricted = compare(case, args.labels, xrv)
        total += _print(case, rows)
        if restricted is not None:
            kept = Case(
                f"{case.fmt}: cxr on the images torchxrayvision keeps", case.ours, case.theirs
            )
            _print(kept, restricted)
    print(f"\n{total} count(s) differ; each is explained in the README's format table.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
