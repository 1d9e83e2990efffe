"""Where a label file's images are: the one folder walk of the label-file adapters.

Label files name images in three ways: by file name (NIH ``00000001_000.png``), by an id
without extension (RSNA ``patientId``, SIIM ``ImageId``, VinDr ``image_id``, Open-i ``imageid``,
MIMIC ``dicom_id``), or by a path relative to the dataset (CheXpert). The first two are found
by indexing the image folders once (sorted walk, first file wins), so the official nested
layouts (``images_001/images/``, SIIM's study/series folders, MIMIC's ``p10/p10000032/s…/``)
work as well as one flat folder, and ids match a ``.dcm``, ``.png`` or ``.jpg`` alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from cxr_core.data.formats.files import (
    Missing,
    apply_missing_policy,
    csv_header,
    is_image_file,
    read_label_csv,
    walk_files,
)
from cxr_core.errors import DatasetError

MatchBy = Literal["name", "stem"]


def index_images_by(folders: Iterable[Path], by: MatchBy) -> dict[str, str]:
    """File name (or stem) -> absolute path of every image under ``folders`` (sorted, first wins)."""
    index: dict[str, str] = {}
    for folder in folders:
        for path in walk_files(folder):
            if is_image_file(path.name):
                index.setdefault(path.name if by == "name" else path.stem, os.path.abspath(path))
    return index


def image_folders(
    root: Path, images_dir: str | Path | None, candidates: Sequence[str]
) -> list[Path]:
    """The folders to index: ``images_dir`` when given, else the first of ``candidates`` (names
    under ``root``, glob patterns allowed) that exist; raises naming what was looked for."""
    if images_dir is not None:
        folder = Path(images_dir)
        if not folder.is_dir():
            raise DatasetError(f"image folder {folder} does not exist")
        return [folder]
    for pattern in candidates:
        found = sorted(p for p in root.glob(pattern) if p.is_dir())
        if found:
            return found
    raise DatasetError(
        f"no image folder found under {root}: looked for {', '.join(candidates)}; "
        "pass images_dir= (cxr data inspect --option images_dir=FOLDER), or --labels-only to read the labels alone"
    )


def attach_paths(
    frame: pd.DataFrame,
    keys: pd.Series,
    *,
    root: Path,
    images_dir: str | Path | None,
    candidates: Sequence[str],
    by: MatchBy,
    check_files: bool,
    missing: Missing,
    where: str,
    default_suffix: str = "",
) -> tuple[pd.DataFrame, int]:
    """``frame`` with an absolute ``path`` per row, found by ``keys`` (file names or stems).

    Without ``check_files`` nothing is read from disk: paths point where the images would be
    (``images_dir`` or the first candidate folder, key + ``default_suffix``). With it, a row
    whose image is absent follows ``missing`` (error, or drop and count). Returns the frame and
    the number of rows dropped.
    """
    if not check_files:
        base = Path(images_dir) if images_dir is not None else root / candidates[0].rstrip("*/")
        frame = frame.assign(path=str(base.resolve()) + "/" + keys + default_suffix)
        return frame, 0
    folders = image_folders(root, images_dir, candidates)
    index = index_images_by(folders, by)
    found = keys.map(index)
    fallback = str(folders[0].resolve()) + "/" + keys + default_suffix
    frame = frame.assign(path=found.fillna(fallback).to_numpy())
    return apply_missing_policy(
        frame,
        missing,
        where=where,
        hint="pass missing='drop' (cxr data inspect --missing drop)",
        exists=found.notna().to_numpy(),
    )


def first_existing(root: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` that is a file in ``root``."""
    return next((root / n for n in names if (root / n).is_file()), None)


def label_file(path: Path, names: Sequence[str], dataset: str, shown: int | None = None) -> Path:
    """``path`` itself when it is a file, else the first of ``names`` in it; the error names the
    dataset and the first ``shown`` file names (all by default)."""
    if path.is_file():
        return path
    found = first_existing(path, names)
    if found is None:
        raise DatasetError(f"no {dataset} label file ({', '.join(names[:shown])}) in {path}")
    return found


LABEL_FILE_SUFFIXES: tuple[str, ...] = (".csv", ".csv.gz", ".csv.zip", ".csv.bz2", ".csv.xz")


def label_csv_header(path: Path, *, strip: bool = True) -> list[str]:
    """The column names of a label CSV (plain or compressed; stripped of spaces unless ``strip`` is
    false); [] for anything else, so format recognition can ask every file without failing on a
    folder or an image."""
    if not (path.is_file() and path.name.lower().endswith(LABEL_FILE_SUFFIXES)):
        return []
    if strip:
        return csv_header(path, "CSV label file")
    return [str(c) for c in read_label_csv(path, "CSV label file", header_only=True).columns]
