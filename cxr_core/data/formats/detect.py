"""Tell which on-disk format a path holds, and load it through the matching adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr_core.data.formats.chexpert import is_chexpert_header, load_chexpert
from cxr_core.data.formats.class_folders import load_class_folders, subfolders
from cxr_core.data.formats.disease_folders import (
    dataset_folder,
    is_disease_folder,
    load_disease_folders,
)
from cxr_core.data.formats.files import csv_header, is_image_file, walk_files
from cxr_core.data.formats.nih import CSV_NAMES, load_nih
from cxr_core.data.formats.nih import REQUIRED_COLUMNS as NIH_COLUMNS
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

FORMATS: tuple[str, ...] = ("nih", "chexpert", "folders", "disease-folders")
_ASK = "pass --format nih|chexpert|folders|disease-folders"
_CHEXPERT_CSV_NAMES: tuple[str, ...] = ("train.csv", "valid.csv", "train.csv.gz")


def _csv_format(csv: Path) -> str | None:
    header = csv_header(csv, "CSV label file")
    if all(c in header for c in NIH_COLUMNS):
        return "nih"
    if is_chexpert_header(header):
        return "chexpert"
    return None


def detect_format(path: str | Path) -> tuple[str, Path]:
    """(format, the file or folder to hand to its adapter) for a CSV file or a dataset folder."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if path.is_file():
        fmt = _csv_format(path) if path.name.lower().endswith((".csv", ".csv.gz")) else None
        if fmt is None:
            raise DatasetError(
                f"{path.name} is neither an NIH Data_Entry nor a CheXpert CSV; {_ASK}"
            )
        return fmt, path
    for name in CSV_NAMES:
        if (path / name).is_file():
            return "nih", path / name
    for name in _CHEXPERT_CSV_NAMES:
        if (path / name).is_file() and _csv_format(path / name) == "chexpert":
            return "chexpert", path / name
    folders = subfolders(path)
    if not folders:
        raise DatasetError(
            f"{path} holds no label CSV and no sub-folders, so it is not a dataset; {_ASK}"
        )
    if any(is_disease_folder(f) for f in subfolders(dataset_folder(path))):
        return "disease-folders", path
    if any(_has_image(f) for f in folders):
        return "folders", path
    raise DatasetError(f"{path} holds no label CSV and no image files in its sub-folders; {_ASK}")


def _has_image(folder: Path) -> bool:
    """Stops at the first image, so detection stays instant on large folders."""
    return any(is_image_file(path.name) for path in walk_files(folder))


def load_dataset(path: str | Path, fmt: str = "auto", **kw: Any) -> Manifest:
    """Load any supported dataset; ``kw`` go to the adapter (e.g. ``missing="drop"``, ``policy="ignore"``)."""
    path = Path(path)
    if fmt == "auto":
        fmt, target = detect_format(path)
    elif fmt not in FORMATS:
        raise DatasetError(
            f"unknown dataset format {fmt!r}; use auto or one of {', '.join(FORMATS)}"
        )
    else:
        target = path
    if fmt == "nih":
        if target.is_file():
            return load_nih(target.parent, csv=target, **kw)
        return load_nih(target, **kw)
    if fmt == "chexpert":
        if target.is_dir():
            target = next(
                (target / n for n in _CHEXPERT_CSV_NAMES if (target / n).is_file()),
                target / "train.csv",
            )
        return load_chexpert(target, **kw)
    if fmt == "folders":
        return load_class_folders(target, **kw)
    return load_disease_folders(target, **kw)
