"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` plus an image folder -> :class:`Manifest`.

Labels are the 14 NIH findings ("No Finding" means all negative). The official
``test_list.txt`` marks test images; ``train_val_list.txt`` leaves images unassigned so a later
patient-level split (:func:`cxr_core.data.splits.assign_splits`) can carve validation from them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.boxes import NIH_BOX_SIZE, box_table, read_nih_box_list
from cxr_core.data.formats.files import (
    Missing,
    apply_missing_policy,
    csv_header,
    csv_rows,
    first_items,
    index_images,
    read_label_csv,
)
from cxr_core.data.formats.locate import first_existing, label_csv_header
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import NIH14, NO_FINDING, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

CSV_NAMES: tuple[str, ...] = (
    "Data_Entry_2017.csv",
    "Data_Entry_2017_v2020.csv",
    "Data_Entry_2017.csv.gz",
    "Data_Entry_2017_v2020.csv.gz",
)
BOX_LIST_NAMES: tuple[str, ...] = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
REQUIRED_COLUMNS: tuple[str, ...] = ("Image Index", "Finding Labels", "Patient ID")
_OPTIONAL_COLUMNS: tuple[str, ...] = ("View Position", "Patient Age", "Patient Gender")


def find_nih_csv(root: Path) -> Path:
    for name in CSV_NAMES:
        if (root / name).is_file():
            return root / name
    raise DatasetError(
        f"no NIH label file ({', '.join(CSV_NAMES[:2])}) in {root}; pass csv= the Data_Entry CSV"
    )


def _read_csv(csv: Path) -> pd.DataFrame:
    header = csv_header(csv, "NIH label file")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DatasetError(
            f"{csv.name} lacks the column(s) {missing}; expected NIH columns {list(REQUIRED_COLUMNS)} "
            f"(plus optional {list(_OPTIONAL_COLUMNS)}), found {header}"
        )
    wanted = [c for c in (*REQUIRED_COLUMNS, *_OPTIONAL_COLUMNS) if c in header]
    frame = read_label_csv(csv, "NIH label file", dtype=str, keep_default_na=False)
    frame.columns = header
    return frame[wanted]


def _finding_matrix(findings: pd.Series, frame: pd.DataFrame, csv: Path) -> pd.DataFrame:
    """Vectorised "A|B|C" -> one float column per NIH14 class (canonical names).

    A full release has only ~800 distinct label strings, so they are split once each and the
    result indexed back to the 112k rows.
    """
    findings = findings.str.strip()
    blank = (findings == "").to_numpy()
    if blank.any():
        raise DatasetError(
            f"{csv.name}: empty 'Finding Labels' (write 'No Finding' for normal images) at {csv_rows(frame, blank)}"
        )
    codes, uniques = pd.factorize(findings)
    dummies = pd.Series(uniques).str.get_dummies(sep="|")
    canon = {col: canonical_name(col) for col in dummies.columns}  # strips spaces around "|"
    flags = dummies.to_numpy(dtype=bool)[codes]
    unknown = [
        col
        for col, name in canon.items()
        if name not in NIH14.classes and name not in (NO_FINDING, "")
    ]
    if unknown:
        rows = flags[:, [dummies.columns.get_loc(c) for c in unknown]].any(axis=1)
        raise DatasetError(
            f"{csv.name}: unknown finding label(s) {unknown} at {csv_rows(frame, rows)}; "
            f"NIH findings are: {', '.join(NIH14.classes)}, or 'No Finding'"
        )

    def any_of(
        name: str,
    ) -> np.ndarray:  # "Effusion" and "Pleural Effusion" spelled both ways merge
        cols = [i for i, col in enumerate(dummies.columns) if canon[col] == name]
        return flags[:, cols].any(axis=1)

    labels = pd.DataFrame({cls: any_of(cls) for cls in NIH14.classes}, index=findings.index).astype(
        "float32"
    )
    contradictory = any_of(NO_FINDING) & labels.to_numpy().any(axis=1)
    if contradictory.any():
        raise DatasetError(
            f"{csv.name}: 'No Finding' listed together with findings at {csv_rows(frame, contradictory)}"
        )
    return labels


def _read_list(path: Path) -> set[str]:
    return (
        {line.strip() for line in path.read_text().splitlines() if line.strip()}
        if path.is_file()
        else set()
    )


def _official_split(image_ids: pd.Series, root: Path) -> pd.Series:
    test = _read_list(root / "test_list.txt")
    train_val = _read_list(root / "train_val_list.txt")
    both = test & train_val
    if both:
        raise DatasetError(
            f"images listed in both test_list.txt and train_val_list.txt in {root}: {first_items(sorted(both))}"
        )
    return pd.Series(np.where(image_ids.isin(test), "test", ""), index=image_ids.index)


def image_paths(
    names: pd.Series, root: Path, images_dir: Path | None, check_files: bool
) -> tuple[pd.Series, np.ndarray | None]:
    """Absolute paths and which exist (None when not checked); the folders are indexed once so the
    official ``images_001/images/...`` layout works as well as a flat ``images/`` folder."""
    base = images_dir if images_dir is not None else root / "images"
    if not check_files:
        return str(base.resolve()) + "/" + names, None
    if base.is_dir():
        folders = [base]
    elif images_dir is not None:
        raise DatasetError(f"image folder {images_dir} does not exist")
    else:
        folders = sorted(p for p in root.glob("images*") if p.is_dir())
    if not folders:
        raise DatasetError(
            f"no image folder found: expected {base} or images_001/... under {root}; pass images_dir="
        )
    index = index_images(folders)
    fallback = str(folders[0].resolve()) + "/" + names  # where a missing image would have been
    found = names.map(index)
    return found.fillna(fallback), found.notna().to_numpy()


def load_nih(
    root: str | Path,
    *,
    csv: str | Path | None = None,
    images_dir: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Read NIH ChestX-ray14 labels and images.

    ``missing="drop"`` keeps only the rows whose image is on disk (e.g. the full 112k CSV next
    to a few thousand downloaded images) and records how many were dropped in ``Manifest.source``;
    ``check_files=False`` skips the disk entirely (parsing labels only).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"NIH dataset folder {root} does not exist")
    csv_path = Path(csv) if csv is not None else find_nih_csv(root)
    raw = _read_csv(csv_path)
    names = raw["Image Index"].str.strip()
    frame = pd.DataFrame({"image_id": names})
    if (names == "").any():
        raise DatasetError(
            f"{csv_path.name}: empty 'Image Index' at {csv_rows(frame, names == '')}"
        )
    dup = names.duplicated(keep=False)
    if dup.any():
        raise DatasetError(
            f"{csv_path.name}: the same 'Image Index' appears more than once at "
            f"{csv_rows(frame, dup)}; remove duplicate rows"
        )
    labels = _finding_matrix(raw["Finding Labels"], frame, csv_path)

    images = Path(images_dir) if images_dir is not None else None
    frame["path"], exists = image_paths(names, root, images, check_files)
    frame["patient_id"] = raw["Patient ID"].str.strip()
    no_patient = frame["patient_id"] == ""
    if no_patient.any():
        raise DatasetError(f"{csv_path.name}: empty 'Patient ID' at {csv_rows(frame, no_patient)}")
    frame["view"] = raw["View Position"].str.strip().str.upper() if "View Position" in raw else ""
    frame["split"] = _official_split(names, root)
    frame = pd.concat([frame, labels], axis=1)
    if "Patient Age" in raw:  # older releases write "058Y"
        frame["age"] = pd.to_numeric(
            raw["Patient Age"].str.extract(r"(\d+)", expand=False), errors="coerce"
        )
    if "Patient Gender" in raw:
        frame["sex"] = raw["Patient Gender"].str.strip().str.upper().str[:1]

    source = f"NIH ChestX-ray14 ({csv_path})"
    if check_files:
        frame, dropped = apply_missing_policy(
            frame,
            missing,
            where=str(csv_path),
            hint="pass missing='drop' (cxr data inspect --missing drop)",
            exists=exists,
        )
        if dropped:
            source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, NIH14, source)


def _recognise(path: Path) -> Path | None:
    if path.is_file():
        return path if all(c in label_csv_header(path) for c in REQUIRED_COLUMNS) else None
    return first_existing(path, CSV_NAMES)


def _load(target: Path, **options) -> Manifest:
    if target.is_file():
        return load_nih(target.parent, csv=target, **options)
    return load_nih(target, **options)


def load_nih_boxes(
    target: Path, *, bbox: str | Path | None = None, images_dir: str | Path | None = None
) -> pd.DataFrame:
    """NIH's ``BBox_List_2017.csv`` next to the label file (or ``bbox=``) as a box table, each box
    with the path of its image (found like the manifest's; absent images keep where they would be)."""
    root = target.parent if target.is_file() else target
    box_file = Path(bbox) if bbox is not None else first_existing(root, BOX_LIST_NAMES)
    if box_file is None:
        raise DatasetError(f"no NIH box list ({', '.join(BOX_LIST_NAMES)}) in {root}; pass bbox=")
    boxes = read_nih_box_list(box_file)
    images = Path(images_dir) if images_dir is not None else None
    boxes["path"], _ = image_paths(boxes["image_id"], root, images, check_files=True)
    boxes["reader"] = ""
    boxes["width"] = boxes["height"] = float(NIH_BOX_SIZE)
    return box_table(boxes, str(box_file))


FORMAT = DatasetFormat(
    name="nih",
    summary="NIH ChestX-ray14: Data_Entry_2017.csv + images/ (or images_001/images/...), "
    "optional train_val_list.txt / test_list.txt and BBox_List_2017.csv",
    looks_for=f"a CSV with columns {', '.join(REQUIRED_COLUMNS)}, or a folder holding {CSV_NAMES[0]}",
    recognise=_recognise,
    load=_load,
    load_boxes=load_nih_boxes,
    options=("csv", "images_dir", "check_files", "missing"),
    box_options=("bbox", "images_dir"),
)
