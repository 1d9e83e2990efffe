"""NIH expert labels (Majkowska et al., Radiology 2019) -> :class:`Manifest`.

Radiologist-adjudicated labels for 4,376 NIH ChestX-ray14 images (validation 2,414, test 1,962)
and four findings: Fracture, Pneumothorax, Airspace opacity, Nodule or mass, each YES or NO. The
file keeps NIH's own columns (Image Index, Patient ID, View Position, ...), so the images are
NIH's and are found like NIH's (``images/`` or ``images_001/images/``, or ``images_dir=``).
Finding names are harmonised: Airspace opacity -> Lung Opacity, Nodule or mass -> Nodule/Mass.

Its use is a second, better truth for NIH images: :func:`expert_labels_for` lines the expert
labels up with any NIH manifest by image id (the NIH file name), unknown where an image was not
adjudicated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import Missing, apply_missing_policy, csv_rows, read_label_csv
from cxr_core.data.formats.locate import first_existing, label_csv_header
from cxr_core.data.formats.nih import image_paths
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace, canonical_name
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

FINDING_COLUMNS: tuple[str, ...] = (
    "Fracture",
    "Pneumothorax",
    "Airspace opacity",
    "Nodule or mass",
)
NIH_EXPERT4 = LabelSpace("nih_expert4", tuple(canonical_name(c) for c in FINDING_COLUMNS))
CSV_NAMES: tuple[str, ...] = (
    "google2019_nih-chest-xray-labels.csv",
    "google2019_nih-chest-xray-labels.csv.gz",
)
_VALUES = {"YES": 1.0, "NO": 0.0, "": np.nan}
_SETS = {"test": "test", "val": "val", "validation": "val"}


def _labels(raw: pd.DataFrame, frame: pd.DataFrame, csv: Path) -> pd.DataFrame:
    text = raw[list(FINDING_COLUMNS)].apply(lambda col: col.str.strip().str.upper())
    bad = ~text.isin(list(_VALUES))
    if bad.to_numpy().any():
        cols = [c for c in FINDING_COLUMNS if bad[c].any()]
        raise DatasetError(
            f"{csv.name}: values other than YES, NO or blank in {cols} at "
            f"{csv_rows(frame, bad.any(axis=1).to_numpy())}"
        )
    return pd.DataFrame(
        {canonical_name(c): text[c].map(_VALUES).astype("float32") for c in FINDING_COLUMNS}
    )


def load_nih_expert(
    csv: str | Path,
    *,
    images_dir: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Read the expert label file; ``Set Id`` (val / test) becomes the split."""
    csv = Path(csv)
    if not csv.is_file():
        raise DatasetError(f"NIH expert label file {csv} does not exist")
    header = label_csv_header(csv)
    absent = [c for c in ("Image Index", "Patient ID", *FINDING_COLUMNS) if c not in header]
    if absent:
        raise DatasetError(
            f"{csv.name} lacks the column(s) {absent}; the NIH expert labels have NIH's Image Index and "
            f"Patient ID plus {', '.join(FINDING_COLUMNS)}"
        )
    raw = read_label_csv(csv, "NIH expert label file", dtype=str, keep_default_na=False)
    raw.columns = [str(c).strip() for c in raw.columns]
    names = raw["Image Index"].str.strip()
    frame = pd.DataFrame({"image_id": names, "patient_id": raw["Patient ID"].str.strip()})
    dup = names.duplicated(keep=False)
    if dup.any():
        raise DatasetError(
            f"{csv.name}: the same Image Index more than once at {csv_rows(frame, dup)}"
        )
    frame["view"] = raw["View Position"].str.strip().str.upper() if "View Position" in raw else ""
    sets = (
        raw["Set Id"].str.strip().str.lower() if "Set Id" in raw else pd.Series("", index=raw.index)
    )
    frame["split"] = sets.map(_SETS).fillna("")
    frame = pd.concat([frame, _labels(raw, frame, csv)], axis=1)
    if "Patient Age" in raw:
        frame["age"] = pd.to_numeric(
            raw["Patient Age"].str.extract(r"(\d+)", expand=False), errors="coerce"
        )
    if "Patient Gender" in raw:
        frame["sex"] = raw["Patient Gender"].str.strip().str.upper().str[:1]
    images = Path(images_dir) if images_dir is not None else None
    frame["path"], exists = image_paths(names, csv.parent, images, check_files)
    source = f"NIH expert labels, Majkowska et al. 2019 ({csv})"
    if check_files:
        frame, dropped = apply_missing_policy(
            frame,
            missing,
            where=str(csv),
            hint="pass missing='drop' (cxr data inspect --missing drop)",
            exists=exists,
        )
        if dropped:
            source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, NIH_EXPERT4, source)


def expert_labels_for(manifest: Manifest, expert: Manifest) -> pd.DataFrame:
    """The expert labels of ``manifest``'s images, one row per manifest row (same order), matched
    by image id (NIH file name); NaN for images the experts did not adjudicate. A second truth to
    score an NIH model's predictions against."""
    by_id = expert.frame.set_index("image_id")[list(expert.classes)]
    out = by_id.reindex(manifest.frame["image_id"].to_numpy())
    out.index = manifest.frame.index
    return out


def _recognise(path: Path) -> Path | None:
    candidates = [path] if path.is_file() else [p for p in [first_existing(path, CSV_NAMES)] if p]
    for candidate in candidates:
        header = label_csv_header(candidate)
        if all(c in header for c in FINDING_COLUMNS) and "Image Index" in header:
            return candidate
    return None


FORMAT = DatasetFormat(
    name="nih-expert",
    summary="NIH expert labels (Majkowska 2019): NIH's columns + Fracture, Pneumothorax, Airspace opacity, "
    "Nodule or mass (YES/NO), Set Id; NIH images",
    looks_for="a CSV with Image Index and the columns " + ", ".join(FINDING_COLUMNS),
    recognise=_recognise,
    load=load_nih_expert,
    options=("images_dir", "check_files", "missing"),
)
