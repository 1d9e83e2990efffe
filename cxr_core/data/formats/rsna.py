"""RSNA Pneumonia Detection Challenge (2018) -> :class:`Manifest` and opacity boxes.

``stage_2_train_labels.csv`` (or its ``.zip``) has one row per box (``patientId, x, y, width,
height, Target``) and one row with an empty box per negative image; the 26,684 images are NIH
ChestX-ray14 films relabelled by radiologists, as ``<patientId>.dcm`` (or PNG/JPEG conversions).
Despite its name ``patientId`` identifies an image (one per patient in this release), so it is
both the image and the patient id. ``Target`` 1 is an opacity suspicious for pneumonia: it gives
the labels ``Lung Opacity`` (the challenge's class) and ``Pneumonia`` (the same value, so models
trained on NIH or CheXpert can be scored here). View, age and sex come from a DICOM header
table beside the labels when there is one (``kaggle_stage_2_train_images_dicom_headers.csv.gz``,
or ``headers=``), else from the DICOM files themselves. ``stage_2_detailed_class_info.csv``,
when present, adds its three-way class (Lung Opacity / No Lung Opacity / Not Normal / Normal).
Boxes are in the 1024 px space of the released images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.boxes import NIH_BOX_SIZE, box_table
from cxr_core.data.formats.dicom_headers import read_dicom_headers, with_header_columns
from cxr_core.data.formats.files import Missing, csv_rows, first_items, read_label_csv
from cxr_core.data.formats.locate import attach_paths, first_existing, label_csv_header, label_file
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

LABEL_NAMES: tuple[str, ...] = (
    "stage_2_train_labels.csv",
    "stage_2_train_labels.csv.zip",
    "kaggle_stage_2_train_labels.csv.zip",
    "stage_1_train_labels.csv",
)
HEADER_NAMES: tuple[str, ...] = (
    "kaggle_stage_2_train_images_dicom_headers.csv.gz",
    "stage_2_train_images_dicom_headers.csv",
)
DETAIL_NAMES: tuple[str, ...] = (
    "stage_2_detailed_class_info.csv",
    "stage_1_detailed_class_info.csv",
)
IMAGE_FOLDERS: tuple[str, ...] = ("stage_2_train_images", "stage_1_train_images", "images", "train")
REQUIRED_COLUMNS: tuple[str, ...] = ("patientId", "x", "y", "width", "height", "Target")
RSNA_PNEUMONIA = LabelSpace("rsna_pneumonia", ("Lung Opacity", "Pneumonia"))
_BOX = ["x", "y", "width", "height"]


def _read_rows(csv: Path) -> pd.DataFrame:
    header = label_csv_header(csv)
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DatasetError(
            f"{csv.name} lacks {absent}; RSNA label files have {', '.join(REQUIRED_COLUMNS)}"
        )
    raw = read_label_csv(csv, "RSNA label file", dtype={"patientId": str})
    raw["patientId"] = raw["patientId"].str.strip()
    target = pd.to_numeric(raw["Target"], errors="coerce")
    frame = raw.rename(columns={"patientId": "image_id"})
    boxed = raw[_BOX].notna().all(axis=1)
    bad = ~target.isin([0, 1]) | (boxed != (target == 1))
    if bad.any():
        raise DatasetError(
            f"{csv.name}: Target must be 1 with a box or 0 without one; not so at {csv_rows(frame, bad)}"
        )
    split = target.groupby(raw["patientId"]).nunique() > 1
    if split.any():
        raise DatasetError(
            f"{csv.name}: images both with and without opacity: {first_items(split[split].index)}"
        )
    return raw.assign(Target=target)


def _header_table(csv: Path, headers: str | Path | None) -> pd.DataFrame | None:
    path = Path(headers) if headers is not None else first_existing(csv.parent, HEADER_NAMES)
    if path is None:
        return None
    table = read_label_csv(path, "RSNA DICOM header table", dtype=str, keep_default_na=False)
    if "PatientID" not in table:
        raise DatasetError(
            f"{path}: a DICOM header table needs a PatientID column (the image's patientId)"
        )
    return table.drop_duplicates("PatientID").set_index("PatientID")


def _add_metadata(
    frame: pd.DataFrame, csv: Path, headers: str | Path | None, check_files: bool
) -> pd.DataFrame:
    table = _header_table(csv, headers)
    if table is not None:
        meta = table.reindex(frame["image_id"].to_numpy()).fillna("")
        meta.index = frame.index
        return with_header_columns(frame, meta)
    if check_files and frame["path"].str.lower().str.endswith(".dcm").any():
        return with_header_columns(frame, read_dicom_headers(frame["path"]))
    return frame


def load_rsna(
    target: str | Path,
    *,
    images_dir: str | Path | None = None,
    headers: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Read the RSNA labels (a label file, or the challenge folder holding it) into a manifest."""
    csv = _label_file(Path(target))
    rows = _read_rows(csv)
    per_image = rows.groupby("patientId", sort=False)["Target"].first()
    frame = pd.DataFrame({"image_id": per_image.index, "view": "", "split": ""})
    frame["patient_id"] = frame["image_id"]
    for cls in RSNA_PNEUMONIA.classes:
        frame[cls] = per_image.to_numpy(dtype=np.float32)
    frame["boxes"] = rows.groupby("patientId", sort=False)["x"].count().to_numpy()
    detail = first_existing(csv.parent, DETAIL_NAMES)
    if detail is not None:
        info = read_label_csv(detail, "RSNA class info", dtype=str).drop_duplicates("patientId")
        frame["detailed_class"] = (
            frame["image_id"].map(info.set_index("patientId")["class"]).fillna("")
        )
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
        default_suffix=".dcm",
    )
    frame = _add_metadata(frame, csv, headers, check_files)
    source = f"RSNA Pneumonia ({csv}; Lung Opacity = Pneumonia = Target)"
    if dropped:
        source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, RSNA_PNEUMONIA, source)


def load_rsna_boxes(target: str | Path, *, images_dir: str | Path | None = None) -> pd.DataFrame:
    """Every opacity box, listed once per class of the label space (Lung Opacity, Pneumonia) so a
    model predicting either is scored on it; coordinates in the 1024 px release space."""
    csv = _label_file(Path(target))
    rows = _read_rows(csv)
    boxes = rows[rows["Target"] == 1].rename(
        columns={"patientId": "image_id", "width": "w", "height": "h"}
    )
    boxes, _ = attach_paths(
        boxes.reset_index(drop=True),
        boxes["image_id"].reset_index(drop=True),
        root=csv.parent,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="stem",
        check_files=True,
        missing="drop",
        where=str(csv),
        default_suffix=".dcm",
    )
    table = pd.concat(
        [boxes.assign(finding=cls) for cls in RSNA_PNEUMONIA.classes], ignore_index=True
    )
    table = table.assign(reader="", width=float(NIH_BOX_SIZE), height=float(NIH_BOX_SIZE))
    return box_table(table, str(csv))


def _label_file(path: Path) -> Path:
    return label_file(path, LABEL_NAMES, "RSNA", 2)


def _recognise(path: Path) -> Path | None:
    candidate = path if path.is_file() else first_existing(path, LABEL_NAMES)
    if candidate is None:
        return None
    header = label_csv_header(candidate)
    return candidate if all(c in header for c in REQUIRED_COLUMNS) else None


FORMAT = DatasetFormat(
    name="rsna-pneumonia",
    summary="RSNA Pneumonia Detection Challenge: stage_2_train_labels.csv (patientId, box, Target) + "
    "stage_2_train_images/<patientId>.dcm; DICOM header table or headers; opacity boxes",
    looks_for="a CSV with columns " + ", ".join(REQUIRED_COLUMNS) + " (stage_2_train_labels.csv)",
    recognise=_recognise,
    load=load_rsna,
    load_boxes=load_rsna_boxes,
    options=("images_dir", "headers", "check_files", "missing"),
    box_options=("images_dir",),
)
