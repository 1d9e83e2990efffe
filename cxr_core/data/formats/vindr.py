"""VinDr-CXR (VinBigData challenge 2021 / PhysioNet release) -> :class:`Manifest` and boxes.

The label file has one row per box per reader (``image_id, class_name, rad_id, x_min, y_min,
x_max, y_max``; the Kaggle file also ``class_id``); a reader who saw nothing writes one
``No finding`` row without a box. Each image was read by three of 17 radiologists. Labels are
per reader or a consensus over the image's readers:

- ``any`` (default): a finding is positive when at least one reader marked it;
- ``majority``: when more than half of the image's readers did;
- ``all``: when every reader did;
- a reader id (``R9``): that reader's own labels, unknown on the images they did not read.

``No Finding`` is positive exactly when no finding is, under the same rule. Boxes are fused
across readers (the readers' overlapping boxes of one finding averaged, kept when as many readers
as the consensus needs drew them) or listed per reader (``boxes=per_reader``). Coordinates are
in the pixels of the original DICOM (``train/<image_id>.dicom``). The release gives no patient
key, so every image is its own patient.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.boxes import box_table, fuse_boxes
from cxr_core.data.formats.files import Missing, read_label_csv
from cxr_core.data.formats.locate import attach_paths, first_existing, label_csv_header, label_file
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import NO_FINDING, LabelSpace, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

LABEL_NAMES: tuple[str, ...] = (
    "train.csv",
    "vinbigdata-train.csv.gz",
    "annotations_train.csv",
    "annotations_test.csv",
)
IMAGE_FOLDERS: tuple[str, ...] = ("train", "test", "images")
REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "class_name", "rad_id")
BOX_COLUMNS: tuple[str, ...] = ("x_min", "y_min", "x_max", "y_max")
# The 14 findings of the challenge, in their canonical spellings and in this order; a release with
# more local labels (PhysioNet's annotations) adds them after these.
VINDR_FINDINGS: tuple[str, ...] = (
    "Aortic Enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other Lesion",
    "Pleural Effusion",
    "Pleural Thickening",
    "Pneumothorax",
    "Fibrosis",
)
RULES: tuple[str, ...] = ("any", "majority", "all")
_MIN_READERS = {"any": 1, "majority": 2, "all": 3}


def _read(csv: Path) -> pd.DataFrame:
    header = label_csv_header(csv)
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DatasetError(
            f"{csv.name} lacks {absent}; VinDr-CXR files have {', '.join(REQUIRED_COLUMNS)}"
        )
    raw = read_label_csv(csv, "VinDr-CXR label file", dtype={c: str for c in REQUIRED_COLUMNS})
    raw.columns = [str(c).strip() for c in raw.columns]
    rows = pd.DataFrame(
        {
            "image_id": raw["image_id"].str.strip(),
            "finding": raw["class_name"].str.strip().map(canonical_name),
            "reader": raw["rad_id"].str.strip(),
        }
    )
    for col in BOX_COLUMNS:
        rows[col] = pd.to_numeric(raw[col], errors="coerce") if col in raw else np.nan
    return rows


def _classes(rows: pd.DataFrame) -> tuple[str, ...]:
    present = set(rows["finding"]) - {NO_FINDING}
    known = [c for c in VINDR_FINDINGS if c in present]
    return (*known, *sorted(present - set(known)), NO_FINDING)


def _labels(rows: pd.DataFrame, classes: tuple[str, ...], consensus: str) -> pd.DataFrame:
    """Image x class labels under ``consensus`` (float: 1, 0, NaN for a reader's unread images)."""
    findings = [c for c in classes if c != NO_FINDING]
    marked = (
        pd.crosstab([rows["image_id"], rows["reader"]], rows["finding"]).reindex(
            columns=findings, fill_value=0
        )
        > 0
    )
    if consensus in RULES:
        votes = marked.groupby(level="image_id").sum()
        readers = marked.groupby(level="image_id").size()
        need = {"any": 1, "majority": readers // 2 + 1, "all": readers}[consensus]
        labels = votes.ge(need, axis=0).astype(np.float32)
    else:
        images = marked.index.get_level_values("image_id").unique()
        own = (
            marked.xs(consensus, level="reader")
            if consensus in marked.index.get_level_values("reader")
            else None
        )
        if own is None:
            known = sorted(set(rows["reader"]))
            raise DatasetError(
                f"consensus {consensus!r} is neither a rule ({', '.join(RULES)}) nor a reader ({', '.join(known)})"
            )
        labels = own.astype(np.float32).reindex(images)
    labels[NO_FINDING] = np.where(
        labels.isna().all(axis=1), np.nan, (labels == 0).all(axis=1).astype(np.float32)
    )
    return labels


def load_vindr(
    target: str | Path,
    *,
    consensus: str = "any",
    images_dir: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Image-level labels of every image the file lists, by ``consensus`` (see the module)."""
    csv = _label_file(Path(target))
    rows = _read(csv)
    classes = _classes(rows)
    labels = _labels(rows, classes, consensus)
    frame = pd.DataFrame({"image_id": labels.index.astype(str), "view": "", "split": ""})
    frame["patient_id"] = frame["image_id"]
    frame = pd.concat([frame, labels.reset_index(drop=True)[list(classes)]], axis=1)
    frame["readers"] = rows.groupby("image_id")["reader"].nunique().reindex(labels.index).to_numpy()
    frame, dropped = attach_paths(
        frame,
        frame["image_id"],
        root=csv.parent,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="stem",
        check_files=check_files,
        missing=missing,
        where=str(csv),
        default_suffix=".dicom",
    )
    source = f"VinDr-CXR ({csv}; consensus {consensus})"
    if dropped:
        source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, LabelSpace("vindr_cxr", classes), source)


def load_vindr_boxes(
    target: str | Path,
    *,
    boxes: str = "fused",
    consensus: str = "any",
    iou: float = 0.4,
    images_dir: str | Path | None = None,
) -> pd.DataFrame:
    """The readers' boxes, ``fused`` across readers (kept when drawn by as many readers as
    ``consensus`` needs: 1, a majority of 3 = 2, or 3) or ``per_reader``; pixel coordinates of the
    original images (``width``/``height`` NaN: scaled from the image read)."""
    if boxes not in ("fused", "per_reader"):
        raise DatasetError(f"boxes must be fused or per_reader, not {boxes!r}")
    if consensus not in RULES:
        raise DatasetError(f"box consensus must be one of {', '.join(RULES)}, not {consensus!r}")
    csv = _label_file(Path(target))
    rows = _read(csv).dropna(subset=list(BOX_COLUMNS))
    table = rows.assign(
        x=rows["x_min"],
        y=rows["y_min"],
        w=rows["x_max"] - rows["x_min"],
        h=rows["y_max"] - rows["y_min"],
        width=np.nan,
        height=np.nan,
    )
    table, _ = attach_paths(
        table.reset_index(drop=True),
        table["image_id"].reset_index(drop=True),
        root=csv.parent,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="stem",
        check_files=True,
        missing="drop",
        where=str(csv),
        default_suffix=".dicom",
    )
    table = box_table(table, str(csv))
    if boxes == "per_reader":
        return table
    return box_table(fuse_boxes(table, iou=iou, min_readers=_MIN_READERS[consensus]), str(csv))


def _label_file(path: Path) -> Path:
    return label_file(path, LABEL_NAMES, "VinDr-CXR")


def _recognise(path: Path) -> Path | None:
    candidate = path if path.is_file() else first_existing(path, LABEL_NAMES)
    if candidate is None:
        return None
    header = label_csv_header(candidate)
    return candidate if all(c in header for c in (*REQUIRED_COLUMNS, *BOX_COLUMNS)) else None


FORMAT = DatasetFormat(
    name="vindr-cxr",
    summary="VinDr-CXR: train.csv (image_id, class_name, rad_id, x_min..y_max: one row per box per reader, "
    "3 readers per image) + train/<image_id>.dicom; consensus any / majority / all / a reader; boxes fused "
    "or per reader",
    looks_for="a CSV with columns image_id, class_name, rad_id, x_min, y_min, x_max, y_max",
    recognise=_recognise,
    load=load_vindr,
    load_boxes=load_vindr_boxes,
    options=("consensus", "images_dir", "check_files", "missing"),
    box_options=("boxes", "consensus", "iou", "images_dir"),
)
