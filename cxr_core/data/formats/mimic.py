"""MIMIC-CXR-JPG 2.0.0 (PhysioNet) -> :class:`Manifest`.

The release's tables, side by side in its root folder (plain or ``.gz``):

- ``mimic-cxr-2.0.0-chexpert.csv`` and ``mimic-cxr-2.0.0-negbio.csv``: one row per *study*
  (``subject_id, study_id`` and the 14 CheXpert observations, 1.0 / 0.0 / -1.0 uncertain /
  blank), labelled from the report by the CheXpert or the NegBio labeller (``labeler=``);
- ``mimic-cxr-2.0.0-metadata.csv``: one row per image (``dicom_id, subject_id, study_id,
  ViewPosition, Rows, Columns, StudyDate, ...``);
- ``mimic-cxr-2.0.0-split.csv``: the official split per image (train / validate / test);
- images at ``files/p<first 2 digits of subject>/p<subject_id>/s<study_id>/<dicom_id>.jpg``.

Every image takes its study's labels; uncertain and blank values follow the same policies as
CheXpert (the same labeller): ``policy`` (ones / zeros / ignore, per class) and ``blank`` (zero or
unknown). An image whose study has no label row is unknown for every finding. The patient is
``subject_id``; the official split is kept (validate -> val).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxr_core.data.formats.chexpert import apply_policies, describe_policies, resolve_policies
from cxr_core.data.formats.files import Missing, apply_missing_policy, csv_rows, read_label_csv
from cxr_core.data.formats.locate import first_existing, label_csv_header
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import CHEXPERT14
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

PREFIX = "mimic-cxr-2.0.0-"
LABELERS: tuple[str, ...] = ("chexpert", "negbio")
STUDY_KEYS: tuple[str, ...] = ("subject_id", "study_id")
METADATA_COLUMNS: tuple[str, ...] = ("dicom_id", "subject_id", "study_id", "ViewPosition")
_SPLITS = {"train": "train", "validate": "val", "test": "test"}


def _table(root: Path, name: str) -> Path | None:
    return first_existing(root, (f"{PREFIX}{name}.csv", f"{PREFIX}{name}.csv.gz"))


def _root_and_labels(target: Path, labeler: str) -> tuple[Path, Path]:
    if labeler not in LABELERS:
        raise DatasetError(f"labeler must be one of {', '.join(LABELERS)}, not {labeler!r}")
    if target.is_file():
        return target.parent, target
    labels = _table(target, labeler)
    if labels is None:
        raise DatasetError(
            f"no {PREFIX}{labeler}.csv(.gz) in {target}; MIMIC-CXR-JPG ships it in its root folder"
        )
    return target, labels


def _study_labels(
    csv: Path, policy: str | Mapping[str, str], blank: str
) -> tuple[pd.DataFrame, str]:
    header = label_csv_header(csv)
    classes = list(CHEXPERT14.classes)
    absent = [c for c in (*STUDY_KEYS, *classes) if c not in header]
    if absent:
        raise DatasetError(
            f"{csv.name} lacks {absent}; MIMIC-CXR label files have {', '.join((*STUDY_KEYS, *classes))}"
        )
    raw = read_label_csv(csv, "MIMIC-CXR label file", dtype={k: str for k in STUDY_KEYS})
    original = raw[classes].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    invalid = ~(np.isnan(original) | np.isin(original, (1.0, 0.0, -1.0))) | (
        raw[classes].notna().to_numpy() & np.isnan(original)
    )
    if invalid.any():
        frame = pd.DataFrame({"image_id": raw["study_id"]})
        raise DatasetError(
            f"{csv.name}: values other than 1.0, 0.0, -1.0 or blank at {csv_rows(frame, invalid.any(axis=1))}"
        )
    policies = resolve_policies(policy)
    values = apply_policies(original, classes, policies, blank)
    labels = pd.DataFrame(values.astype(np.float32), columns=classes)
    labels["study_id"] = raw["study_id"].str.strip()
    return labels.drop_duplicates("study_id").set_index("study_id"), describe_policies(policies)


def _image_path(base: Path, meta: pd.DataFrame) -> pd.Series:
    subject = meta["subject_id"]
    return (
        str(base.resolve())
        + "/p"
        + subject.str[:2]
        + "/p"
        + subject
        + "/s"
        + meta["study_id"]
        + "/"
        + meta["dicom_id"]
        + ".jpg"
    )


def load_mimic(
    target: str | Path,
    *,
    labeler: Literal["chexpert", "negbio"] = "chexpert",
    policy: str | Mapping[str, str] = "ones",
    blank: Literal["zero", "unknown"] = "zero",
    images_dir: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Every image of the metadata table with its study's labels, view and official split."""
    root, csv = _root_and_labels(Path(target), labeler)
    if blank not in ("zero", "unknown"):
        raise DatasetError(f"blank must be 'zero' or 'unknown', not {blank!r}")
    meta_csv = _table(root, "metadata")
    if meta_csv is None:
        raise DatasetError(
            f"no {PREFIX}metadata.csv(.gz) in {root}: it lists the images of each study"
        )
    meta = read_label_csv(meta_csv, "MIMIC-CXR metadata", dtype=str, keep_default_na=False)
    absent = [c for c in METADATA_COLUMNS if c not in meta]
    if absent:
        raise DatasetError(f"{meta_csv.name} lacks {absent}")
    meta = meta.apply(lambda col: col.str.strip())
    labels, described = _study_labels(csv, policy, blank)
    frame = pd.DataFrame(
        {
            "image_id": meta["dicom_id"],
            "patient_id": meta["subject_id"],
            "view": meta["ViewPosition"].str.upper(),
            "study_id": meta["study_id"],
        }
    )
    frame["split"] = _official_split(root, meta["dicom_id"])
    frame = pd.concat(
        [frame, labels.reindex(meta["study_id"].to_numpy()).reset_index(drop=True)], axis=1
    )
    base = Path(images_dir) if images_dir is not None else root / "files"
    frame["path"] = _image_path(base, meta)
    unlabelled = int(frame[list(CHEXPERT14.classes)].isna().all(axis=1).sum())
    source = f"MIMIC-CXR-JPG ({csv}; uncertain -> {described}; blank -> {'0' if blank == 'zero' else 'unknown'})"
    if unlabelled:
        source += f"; {unlabelled} images of studies without labels (unknown)"
    if check_files:
        frame, dropped = apply_missing_policy(
            frame,
            missing,
            where=str(meta_csv),
            hint="pass missing='drop' (cxr data inspect --missing drop)",
        )
        if dropped:
            source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, CHEXPERT14, source)


def _official_split(root: Path, dicom_ids: pd.Series) -> pd.Series:
    split_csv = _table(root, "split")
    if split_csv is None:
        return pd.Series("", index=dicom_ids.index)
    table = read_label_csv(split_csv, "MIMIC-CXR split", dtype=str, keep_default_na=False)
    if "dicom_id" not in table or "split" not in table:
        raise DatasetError(f"{split_csv.name} needs dicom_id and split columns")
    by_image = table.set_index(table["dicom_id"].str.strip())["split"].str.strip().str.lower()
    unknown = sorted(set(by_image) - set(_SPLITS))
    if unknown:
        raise DatasetError(
            f"{split_csv.name}: unknown split names {unknown}; expected train, validate, test"
        )
    return dicom_ids.map(by_image.map(_SPLITS)).fillna("")


def _recognise(path: Path) -> Path | None:
    if path.is_dir():
        return path if _table(path, "metadata") and any(_table(path, n) for n in LABELERS) else None
    header = label_csv_header(path)
    is_labels = (
        all(c in header for c in STUDY_KEYS) and "Path" not in header and "No Finding" in header
    )
    return path if is_labels and _table(path.parent, "metadata") else None


FORMAT = DatasetFormat(
    name="mimic-cxr",
    summary="MIMIC-CXR-JPG 2.0.0: mimic-cxr-2.0.0-{chexpert,negbio,metadata,split}.csv(.gz) + "
    "files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg; labeler=chexpert|negbio, CheXpert uncertainty policies",
    looks_for=f"a folder (or its label CSV) holding {PREFIX}metadata.csv and {PREFIX}chexpert.csv or -negbio.csv",
    recognise=_recognise,
    load=load_mimic,
    options=("labeler", "policy", "blank", "images_dir", "check_files", "missing"),
)
