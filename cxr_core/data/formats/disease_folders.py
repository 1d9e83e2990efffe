"""Per-disease folders ``<Disease>/{disease,no_finding}/`` -> multilabel :class:`Manifest`.

Each disease folder only says something about its own disease: an image under
``Edema/disease`` is Edema-positive, under ``Edema/no_finding`` Edema-negative, and unknown
(NaN, masked in loss and metrics) for every disease it was not filed under. One image filed
under several diseases (same file name) becomes one row carrying all of those labels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.class_folders import list_images, subfolders
from cxr_core.data.formats.files import first_items, patient_id_from_filename
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError
from cxr_core.utils.tasks import Task

LABEL_SPACE_NAME = "disease_folders"


def _polarity(folder_name: str) -> float | None:
    """1.0 for the positive sub-folder, 0.0 for the negative one, None for anything else."""
    key = re.sub(r"[\s_\-]+", "", folder_name.lower())
    if key in ("disease", "positive"):
        return 1.0
    if key in ("nofinding", "nofindings", "negative"):
        return 0.0
    return None


def is_disease_folder(folder: Path) -> bool:
    return any(_polarity(p.name) is not None for p in subfolders(folder))


def dataset_folder(root: Path) -> Path:
    """``root`` itself, or its single ``Dataset/`` child as the layout is usually shipped."""
    children = subfolders(root)
    if (
        len(children) == 1
        and not is_disease_folder(children[0])
        and any(is_disease_folder(c) for c in subfolders(children[0]))
    ):
        return children[0]
    return root


def load_disease_folders(root: str | Path) -> Manifest:
    """Read ``<Disease>/disease`` and ``<Disease>/no_finding`` folders into one multilabel manifest."""
    root = Path(
        os.path.abspath(root)
    )  # absolute but not resolved: a dataset of symlinks keeps its own paths
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    base = dataset_folder(root)
    diseases = [d for d in subfolders(base) if is_disease_folder(d)]
    if not diseases:
        raise DatasetError(f"no <Disease>/disease or <Disease>/no_finding folders found in {root}")
    strays = [d.name for d in subfolders(base) if d not in diseases]
    if strays:
        raise DatasetError(
            f"folder(s) {strays} in {base} lack disease/ and no_finding/ sub-folders; remove them or file their images"
        )

    records: list[tuple[str, str, str, float]] = []
    skipped = 0
    for folder in diseases:
        disease = canonical_name(folder.name)
        for sub in subfolders(folder):
            value = _polarity(sub.name)
            if value is None:
                raise DatasetError(
                    f"{sub} is neither disease/ nor no_finding/; rename or remove it"
                )
            images, n_other = list_images(sub)
            skipped += n_other
            records.extend((p.name, str(p), disease, value) for p in images)
    if not records:
        raise DatasetError(f"the disease folders in {root} hold no images")

    long = pd.DataFrame.from_records(records, columns=["image_id", "path", "disease", "value"])
    classes = sorted(long["disease"].unique())
    conflicts = long.groupby(["image_id", "disease"])["value"].nunique() > 1
    if conflicts.any():
        bad = [f"{img} ({dis})" for img, dis in conflicts[conflicts].index]
        raise DatasetError(
            f"image(s) filed under both disease/ and no_finding/ of the same disease: {first_items(bad)}"
        )
    labels = long.pivot_table(
        index="image_id", columns="disease", values="value", aggfunc="first"
    ).reindex(columns=classes)
    paths = long.groupby("image_id")["path"].first()  # records are sorted, so the first folder wins
    frame = pd.DataFrame(
        {
            "image_id": labels.index,
            "path": paths.reindex(labels.index).to_numpy(),
            "patient_id": [patient_id_from_filename(Path(i).stem) for i in labels.index],
            "view": "",
            "split": "",
        }
    )
    frame = pd.concat([frame, labels.reset_index(drop=True).astype(np.float32)], axis=1)
    source = f"disease folders ({base})" + (
        f"; {skipped} non-image files skipped" if skipped else ""
    )
    return Manifest(frame, LabelSpace(LABEL_SPACE_NAME, tuple(classes), Task.MULTILABEL), source)


def _recognise(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    return path if any(is_disease_folder(f) for f in subfolders(dataset_folder(path))) else None


FORMAT = DatasetFormat(
    name="disease-folders",
    summary="per-disease folders: [Dataset/]<Disease>/{disease,no_finding}/ (unknown for diseases an image "
    "was not filed under)",
    looks_for="a folder of <Disease>/disease/ and <Disease>/no_finding/ sub-folders (or Dataset/ holding them)",
    recognise=_recognise,
    load=load_disease_folders,
)
