"""View, age and sex from DICOM headers, for label files that do not carry them (RSNA, SIIM).

Only the three tags are read (``stop_before_pixels``), so a header pass over 12,000 files takes
seconds. A file that is not DICOM gives empty values: its image is judged when it is decoded.
"""

from __future__ import annotations

import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

HEADER_TAGS: tuple[str, ...] = ("ViewPosition", "PatientAge", "PatientSex")


def read_dicom_headers(paths: pd.Series) -> pd.DataFrame:
    """``ViewPosition``, ``PatientAge``, ``PatientSex`` per path (strings, "" when absent)."""
    rows = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
            rows.append(tuple(str(ds.get(tag, "") or "") for tag in HEADER_TAGS))
        except (OSError, InvalidDicomError):
            rows.append(("",) * len(HEADER_TAGS))
    return pd.DataFrame(rows, columns=list(HEADER_TAGS), index=paths.index)


def with_header_columns(frame: pd.DataFrame, headers: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``view``, ``age`` (years, from "058Y" or "58") and ``sex`` (M/F) from a header
    table aligned with it."""
    out = frame.copy()
    if "ViewPosition" in headers:
        out["view"] = headers["ViewPosition"].fillna("").astype(str).str.strip().str.upper()
    if "PatientAge" in headers:
        digits = headers["PatientAge"].fillna("").astype(str).str.extract(r"(\d+)", expand=False)
        out["age"] = pd.to_numeric(digits, errors="coerce")
    if "PatientSex" in headers:
        out["sex"] = headers["PatientSex"].fillna("").astype(str).str.strip().str.upper().str[:1]
    return out
