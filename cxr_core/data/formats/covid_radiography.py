"""COVID-19 Radiography Database (Kaggle; Chowdhury et al. 2020, Rahman et al. 2021) -> :class:`Manifest`
and lung masks.

The release (v4 and later) keeps one folder per class, each with ``images/`` and ``masks/``:
``COVID/images/COVID-1.png`` with its lung mask at ``COVID/masks/COVID-1.png``, and likewise
``Lung_Opacity/``, ``Normal/`` and ``Viral Pneumonia/``, often under a
``COVID-19_Radiography_Dataset/`` folder. The classes are exclusive (multiclass); their names are
harmonised (``COVID`` -> ``COVID-19``, ``Lung_Opacity`` -> ``Lung Opacity``). File names carry no
patient, so every image is its own patient: the set gathers images from many public sources and
cannot be split by patient. The released masks are 256 px squares for 299 px images, both
covering the whole film, so masks are resized with their images rather than refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cxr_core.data.formats.class_folders import list_images, subfolders
from cxr_core.data.formats.files import first_items, patient_id_from_filename
from cxr_core.data.formats.mask_set import LUNG_TARGET, MaskSet
from cxr_core.data.formats.masks import IMAGES_DIR, MASKS_DIR, build_mask_set, read_mask
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.utils.tasks import Task

DATASET_FOLDER = "COVID-19_Radiography_Dataset"


def _is_class_folder(folder: Path) -> bool:
    return (folder / IMAGES_DIR).is_dir() and (folder / MASKS_DIR).is_dir()


def _dataset_root(path: Path) -> Path:
    inner = path / DATASET_FOLDER
    return inner if inner.is_dir() else path


def _class_folders(root: Path) -> list[Path]:
    folders = subfolders(root)
    classes = [f for f in folders if _is_class_folder(f)]
    if not classes:
        raise DatasetError(f"no <Class>/images/ + <Class>/masks/ folders in {root}")
    strays = [f.name for f in folders if f not in classes]
    if strays:
        raise DatasetError(
            f"folder(s) {strays} in {root} lack images/ and masks/; every class folder of the COVID-19 "
            "Radiography Database holds both"
        )
    return classes


def _records(root: Path) -> pd.DataFrame:
    rows = []
    for folder in _class_folders(root):
        images, _ = list_images(folder / IMAGES_DIR)
        if not images:
            raise DatasetError(f"{folder / IMAGES_DIR} holds no images")
        cls = canonical_name(folder.name)
        rows += [(p.relative_to(root).as_posix(), os.path.abspath(p), cls, folder) for p in images]
    return pd.DataFrame(rows, columns=["image_id", "path", "class", "folder"])


def load_covid_radiography(target: str | Path) -> Manifest:
    """One row per image, one-hot over the class folders found (sorted names)."""
    root = _dataset_root(Path(target))
    records = _records(root)
    classes = sorted(records["class"].unique())
    frame = pd.DataFrame(
        {
            "image_id": records["image_id"],
            "path": records["path"],
            "patient_id": records["path"].map(lambda p: patient_id_from_filename(Path(p).stem)),
            "view": "",
            "split": "",
        }
    )
    for cls in classes:
        frame[cls] = (records["class"] == cls).astype("float32")
    return Manifest(
        frame,
        LabelSpace("covid_radiography", tuple(classes), Task.MULTICLASS),
        f"COVID-19 Radiography Database ({root})",
    )


def load_covid_radiography_masks(target: str | Path, *, size: int | None = None) -> MaskSet:
    """Every image with its lung mask (``<Class>/masks/<same name>``)."""
    root = _dataset_root(Path(target))
    records = _records(root)
    masks = [Path(f) / MASKS_DIR / Path(p).name for f, p in zip(records["folder"], records["path"])]
    absent = [str(m) for m in masks if not m.is_file()]
    if absent:
        raise DatasetError(
            f"{len(absent)} image(s) have no mask of the same name: {first_items(absent)}"
        )
    ids = records["image_id"].tolist()
    return build_mask_set(
        root,
        ids,
        [patient_id_from_filename(Path(p).stem) for p in records["path"]],
        records["path"].tolist(),
        lambda i: read_mask(masks[i]),
        size=size,
        target=LUNG_TARGET,
    )


def _recognise(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    root = _dataset_root(path)
    folders = subfolders(root)
    return path if folders and all(_is_class_folder(f) for f in folders) else None


FORMAT = DatasetFormat(
    name="covid-radiography",
    summary="COVID-19 Radiography Database: [COVID-19_Radiography_Dataset/]<Class>/images/*.png with the "
    "lung mask at <Class>/masks/ (COVID, Lung_Opacity, Normal, Viral Pneumonia); lung masks",
    looks_for="class folders that each hold images/ and masks/ (COVID/images, COVID/masks, Normal/images, ...)",
    recognise=_recognise,
    load=load_covid_radiography,
    load_masks=load_covid_radiography_masks,
)
