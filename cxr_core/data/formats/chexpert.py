"""CheXpert: ``train.csv``/``valid.csv`` with uncertain labels -> :class:`Manifest`.

Each of the 14 observations is 1.0 (positive), 0.0 (negative), -1.0 (uncertain) or blank
(not mentioned in the report). The uncertainty policy decides what -1 becomes, per class:
``ones`` (U-Ones), ``zeros`` (U-Zeros) or ``ignore`` (unknown, masked in loss and metrics).
Blank becomes 0 (``blank="zero"``, the usual reading: not mentioned = absent) or unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import (
    Missing,
    apply_missing_policy,
    csv_header,
    csv_rows,
    read_label_csv,
)
from cxr_core.data.formats.locate import label_csv_header
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import CHEXPERT14
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

Policy = Literal["ones", "zeros", "ignore"]
POLICIES: tuple[str, ...] = ("ones", "zeros", "ignore")
REQUIRED_COLUMNS: tuple[str, ...] = ("Path", *CHEXPERT14.classes)
_OPTIONAL_COLUMNS: tuple[str, ...] = ("Sex", "Age", "Frontal/Lateral", "AP/PA")
CSV_NAMES: tuple[str, ...] = ("train.csv", "valid.csv", "train.csv.gz")
_PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")
_SEX = {"female": "F", "male": "M"}


def is_chexpert_header(columns: list[str]) -> bool:
    return (
        "Path" in columns
        and sum(c in columns for c in CHEXPERT14.classes) >= len(CHEXPERT14.classes) // 2
    )


def resolve_policies(policy: str | Mapping[str, str]) -> dict[str, str]:
    """Per-class policy; a mapping names the exceptions, ``default`` (else U-Ones) covers the rest."""
    if isinstance(policy, str):
        chosen = {cls: policy for cls in CHEXPERT14.classes}
    else:
        default = policy.get("default", "ones")
        chosen = {cls: default for cls in CHEXPERT14.classes}
        for name, value in policy.items():
            if name != "default":
                chosen[CHEXPERT14.classes[CHEXPERT14.index(name)]] = value
    bad = {cls: p for cls, p in chosen.items() if p not in POLICIES}
    if bad:
        raise DatasetError(f"unknown uncertainty policy {bad}; use one of {', '.join(POLICIES)}")
    return chosen


def apply_policies(
    original: np.ndarray, classes: list[str], policies: dict[str, str], blank: str
) -> np.ndarray:
    """CheXpert-labeller values (1, 0, -1, NaN = blank) -> 1 / 0 / NaN under the per-class
    uncertainty policies and the blank rule (MIMIC-CXR's labels are the same labeller's)."""
    values = original.copy()
    values[np.isnan(original)] = 0.0 if blank == "zero" else np.nan
    uncertain_to = {"ones": 1.0, "zeros": 0.0, "ignore": np.nan}
    for j, cls in enumerate(classes):
        values[original[:, j] == -1.0, j] = uncertain_to[policies[cls]]
    return values


def _default_root(csv_path: Path, first_path: str) -> Path:
    """CSV paths start with the dataset folder (``CheXpert-v1.0-small/train/...``) while the CSV
    sits inside it, so paths resolve against the CSV folder's parent when the names agree."""
    folder = csv_path.resolve().parent
    head = Path(first_path).parts[0] if first_path else ""
    return folder.parent if head == folder.name else folder


def _read_labels(csv_path: Path, classes: list[str]) -> pd.DataFrame:
    """Fast float parse; on failure re-read as text to name the rows holding non-numbers."""
    try:
        return read_label_csv(
            csv_path,
            "CheXpert label file",
            dtype={c: "float64" for c in classes} | {"Path": str},
            keep_default_na=True,
        )
    except ValueError:
        raw = read_label_csv(csv_path, "CheXpert label file", dtype=str, keep_default_na=True)
    numeric = raw[classes].apply(pd.to_numeric, errors="coerce")
    bad = (raw[classes].notna() & numeric.isna()).to_numpy()
    rows = bad.any(axis=1)
    frame = pd.DataFrame({"image_id": raw["Path"]})
    cols = [c for c, col_bad in zip(classes, bad.any(axis=0)) if col_bad]
    raise DatasetError(
        f"{csv_path.name}: label values other than 1.0, 0.0, -1.0 or blank in column(s) {cols} at "
        f"{csv_rows(frame, rows)}"
    )


def load_chexpert(
    csv_path: str | Path,
    root: str | Path | None = None,
    *,
    policy: str | Mapping[str, str] = "ones",
    blank: Literal["zero", "unknown"] = "zero",
    frontal_only: bool = False,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Read a CheXpert CSV; ``root`` is the folder the CSV's ``Path`` column is relative to.

    Images under ``train/`` are left unassigned for a patient-level train/val split; images
    under ``valid/`` or ``test/`` (the radiologist-labelled sets) become the test split.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"CheXpert label file {csv_path} does not exist")
    if blank not in ("zero", "unknown"):
        raise DatasetError(f"blank must be 'zero' or 'unknown', not {blank!r}")
    policies = resolve_policies(policy)
    header = csv_header(csv_path, "CheXpert label file")
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DatasetError(
            f"{csv_path.name} lacks the column(s) {absent}; expected CheXpert columns "
            f"{list(REQUIRED_COLUMNS)}, found {header}"
        )
    classes = list(CHEXPERT14.classes)
    raw = _read_labels(csv_path, classes)
    raw.columns = header
    rel = raw["Path"].fillna("").str.strip()
    frame = pd.DataFrame({"image_id": rel})
    original = _checked_labels(csv_path, raw, classes, frame)

    values = apply_policies(original, classes, policies, blank)

    patient = rel.str.extract(_PATIENT, expand=False)
    if patient.isna().any():
        raise DatasetError(
            f"{csv_path.name}: no 'patientNNNNN' folder in Path at {csv_rows(frame, patient.isna())}; "
            "the patient is needed to keep each patient's images in one split"
        )
    frame["patient_id"] = patient
    if frontal_only and "Frontal/Lateral" in raw:
        keep = (raw["Frontal/Lateral"].fillna("").str.strip() == "Frontal").to_numpy()
        raw, frame, values = (
            raw[keep].reset_index(drop=True),
            frame[keep].reset_index(drop=True),
            values[keep],
        )
    rel = frame["image_id"]
    base = (
        Path(root) if root is not None else _default_root(csv_path, rel.iloc[0] if len(rel) else "")
    )
    frame["path"] = str(base.resolve()) + "/" + rel
    frame = _with_columns(raw, frame, values, classes)

    source = (
        f"CheXpert ({csv_path}; uncertain -> {describe_policies(policies)}; blank -> "
        f"{'0' if blank == 'zero' else 'unknown'})"
    )
    if check_files:
        frame, dropped = apply_missing_policy(
            frame,
            missing,
            where=str(csv_path),
            hint="pass missing='drop' (cxr data inspect --missing drop)",
        )
        if dropped:
            source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, CHEXPERT14, source)


def describe_policies(policies: dict[str, str]) -> str:
    counts = pd.Series(policies).value_counts()
    default = counts.index[0]
    exceptions = [f"{cls}: {p}" for cls, p in policies.items() if p != default]
    return default + (f" ({', '.join(exceptions)})" if exceptions else "")


def _recognise(path: Path) -> Path | None:
    candidates = [path] if path.is_file() else [path / name for name in CSV_NAMES]
    return next((c for c in candidates if is_chexpert_header(label_csv_header(c))), None)


FORMAT = DatasetFormat(
    name="chexpert",
    summary="CheXpert: train.csv / valid.csv (Path, Sex, Age, Frontal/Lateral, AP/PA, 14 observations "
    "1 / 0 / -1 uncertain / blank), images under the CSV's parent",
    looks_for="a CSV with a Path column and the CheXpert observation columns (train.csv, valid.csv)",
    recognise=_recognise,
    load=load_chexpert,
    options=("root", "policy", "blank", "frontal_only", "check_files", "missing"),
)


def _checked_labels(
    csv_path: Path, raw: pd.DataFrame, classes: list[str], frame: pd.DataFrame
) -> np.ndarray:
    """The label values as read, after refusing any value, empty Path or duplicate row CheXpert
    does not write (each named by its row)."""
    rel = frame["image_id"]
    original = raw[classes].to_numpy(dtype=np.float64)
    invalid = ~(np.isnan(original) | np.isin(original, (1.0, 0.0, -1.0)))
    if invalid.any():
        cols = [c for c, col_bad in zip(classes, invalid.any(axis=0)) if col_bad]
        raise DatasetError(
            f"{csv_path.name}: label values other than 1.0, 0.0, -1.0 or blank in column(s) {cols} "
            f"at {csv_rows(frame, invalid.any(axis=1))}"
        )
    if (rel == "").any():
        raise DatasetError(f"{csv_path.name}: empty 'Path' at {csv_rows(frame, rel == '')}")
    dup = rel.duplicated(keep=False)
    if dup.any():
        raise DatasetError(
            f"{csv_path.name}: the same image Path appears more than once at "
            f"{csv_rows(frame, dup)}; remove duplicate rows"
        )
    return original


def _with_columns(
    raw: pd.DataFrame, frame: pd.DataFrame, values: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """View (lateral, else AP/PA), split (the radiologist-labelled valid/test sets), the labels,
    age and sex."""
    lateral = (
        raw["Frontal/Lateral"].fillna("").str.strip() == "Lateral"
        if "Frontal/Lateral" in raw
        else False
    )
    ap_pa = raw["AP/PA"].fillna("").str.strip().str.upper() if "AP/PA" in raw else ""
    frame["view"] = np.where(lateral, "LATERAL", ap_pa)
    held_out = frame["image_id"].str.contains(r"(?:^|/)(?:valid|test)/", regex=True)
    frame["split"] = np.where(held_out, "test", "")
    frame = pd.concat([frame, pd.DataFrame(values.astype(np.float32), columns=classes)], axis=1)
    if "Age" in raw:
        frame["age"] = pd.to_numeric(raw["Age"], errors="coerce")
    if "Sex" in raw:
        frame["sex"] = raw["Sex"].fillna("").str.strip().str.lower().map(_SEX).fillna("")
    return frame
