"""One folder per class (``NORMAL/``, ``PNEUMONIA/``), optionally under ``train/ val/ test/`` -> :class:`Manifest`.

A ``train/`` parent leaves its images unassigned: it is the author's training pool, from which
a patient-level split still has to carve validation. ``val/`` and ``test/`` parents are kept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import (
    IMAGE_EXTENSIONS,
    first_items,
    is_hidden,
    is_image_file,
    patient_id_from_filename,
    walk_files,
)
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.utils.tasks import Task

SPLIT_FOLDERS: dict[str, str] = {
    "train": "",
    "training": "",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
KERMANY3: tuple[str, ...] = ("Normal", "Bacterial Pneumonia", "Viral Pneumonia")


def list_images(folder: Path) -> tuple[list[Path], int]:
    """Images under ``folder`` (recursive, sorted) and how many other non-hidden files were skipped."""
    images: list[Path] = []
    skipped = 0
    for path in walk_files(folder):
        if is_image_file(path.name):
            images.append(path)
        else:
            skipped += 1
    return images, skipped


def subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p.name))


def _class_folders(root: Path) -> list[tuple[str, Path]]:
    """(split, class folder) pairs, recognising the optional split parents."""
    top = subfolders(root)
    if not top:
        raise DatasetError(
            f"{root} has no sub-folders; expected one folder per class (e.g. NORMAL/, PNEUMONIA/)"
        )
    split_dirs = [p for p in top if p.name.lower() in SPLIT_FOLDERS]
    if not split_dirs:
        return [("", p) for p in top]
    others = [p.name for p in top if p not in split_dirs]
    if others:
        raise DatasetError(
            f"{root} mixes split folders ({', '.join(p.name for p in split_dirs)}) with other "
            f"folders ({', '.join(others)}); "
            "put every class folder inside train/, val/ or test/"
        )
    pairs = [(SPLIT_FOLDERS[s.name.lower()], c) for s in split_dirs for c in subfolders(s)]
    if not pairs:
        raise DatasetError(
            f"the split folders in {root} hold no class folders (expected e.g. train/NORMAL/)"
        )
    return pairs


def _kermany3_class(stems: pd.Series, folder_class: pd.Series, files: pd.Series) -> pd.Series:
    """Bacterial vs viral pneumonia is only written in Kermany file names (``person1_bacteria_1``)."""
    name = stems.str.lower()
    cls = np.select(
        [
            name.str.contains(r"_bacteria", regex=True),
            name.str.contains(r"_virus", regex=True),
            folder_class == "Normal",
        ],
        ["Bacterial Pneumonia", "Viral Pneumonia", "Normal"],
        default="",
    )
    unknown = cls == ""
    if unknown.any():
        raise DatasetError(
            f"cannot tell bacterial from viral pneumonia for {int(unknown.sum())} file(s) outside a NORMAL folder "
            f"whose names lack '_bacteria'/'_virus': {first_items(files[unknown])}; use label_from='folder'"
        )
    return pd.Series(cls, index=stems.index)


def load_class_folders(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    task: Task = Task.MULTICLASS,
    label_from: Literal["folder", "kermany3"] = "folder",
) -> Manifest:
    """Read a class-per-folder dataset; ``classes`` fixes the class order (default: sorted names).

    Folder names go through :func:`canonical_name` (``No_findings`` -> ``No Finding``). Hidden files
    are ignored; other non-image files are skipped and their count is noted in ``Manifest.source``.
    """
    root = Path(
        os.path.abspath(root)
    )  # absolute but not resolved: a dataset of symlinks keeps its own paths
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if label_from not in ("folder", "kermany3"):
        raise DatasetError(f"label_from must be 'folder' or 'kermany3', not {label_from!r}")
    records: list[tuple[str, str, str]] = []
    skipped = 0
    empty: list[str] = []
    for split, folder in _class_folders(root):
        images, n_other = list_images(folder)
        skipped += n_other
        if not images:
            empty.append(str(folder))
        cls = canonical_name(folder.name)
        records.extend((str(p), split, cls) for p in images)
    if not records:
        raise DatasetError(
            f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in the class folders of {root}"
        )
    if empty:
        raise DatasetError(
            f"class folder(s) without any image: {first_items(empty)}; remove them or add images"
        )

    frame = pd.DataFrame.from_records(records, columns=["path", "split", "class"])
    rel = frame["path"].map(lambda p: Path(p).relative_to(root).as_posix())
    stems = frame["path"].map(lambda p: Path(p).stem)
    if label_from == "kermany3":
        frame["class"] = _kermany3_class(stems, frame["class"], rel)
        found = [c for c in KERMANY3 if (frame["class"] == c).any()]
    else:
        found = sorted(frame["class"].unique())
    wanted = [canonical_name(c) for c in classes] if classes is not None else found
    not_wanted = sorted(set(found) - set(wanted))
    if not_wanted:
        raise DatasetError(
            f"{root} has images of class(es) {not_wanted} not in classes={list(wanted)}; add them or remove the folders"
        )
    without_images = [c for c in wanted if c not in found]
    if without_images:
        raise DatasetError(
            f"class(es) {without_images} have no images in {root}; check the folder names ({', '.join(found)})"
        )

    onehot = pd.DataFrame({c: (frame["class"] == c).astype("float32") for c in wanted})
    out = pd.DataFrame(
        {
            "image_id": rel,
            "path": frame["path"],
            "patient_id": stems.map(patient_id_from_filename),
            "view": "",
            "split": frame["split"],
        }
    )
    out = pd.concat([out, onehot], axis=1)
    name = "kermany3" if label_from == "kermany3" else "class_folders"
    source = f"class folders ({root})" + (f"; {skipped} non-image files skipped" if skipped else "")
    return Manifest(out, LabelSpace(name, tuple(wanted), task), source)


_MASK_PAIR = {"images", "masks"}


def _recognise(path: Path) -> Path | None:
    """A folder whose sub-folders hold images; ``images/`` + ``masks/`` alone is a segmentation
    layout, not two classes called Images and Masks."""
    if not path.is_dir():
        return None
    folders = subfolders(path)
    if {f.name.lower() for f in folders} == _MASK_PAIR:
        return None
    # any() stops at the first image, so recognition stays instant on large folders
    has_image = any(is_image_file(p.name) for f in folders for p in walk_files(f))
    return path if has_image else None


FORMAT = DatasetFormat(
    name="folders",
    summary="class folders: one folder per class (NORMAL/, PNEUMONIA/), optionally under train/ val/ test/; "
    "label_from=kermany3 reads Normal / Bacterial / Viral from Kermany file names",
    looks_for="a folder whose sub-folders (one per class, optionally under train/ val/ test/) hold images",
    recognise=_recognise,
    load=load_class_folders,
    options=("classes", "task", "label_from"),
)
