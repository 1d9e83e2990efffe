"""The film our DICOM results attach to: its header, and the identifiers of what we derive from it.

Results are only written for DICOM input. A PNG or JPEG has no patient, study or series: giving
its results invented identifiers would put orphan objects into a PACS (or, worse, attach them to
the wrong patient by a look-alike ID), so such inputs get a clear :class:`ReportError` and their
results go to the PDF report only.

UIDs of our objects are derived from what they depend on (the film's SOP Instance UID, the
weights' checksum, the thresholds, the calls, the gate outcome and this software's version), so scoring the same
film again with the same model gives the same UIDs and a PACS keeps one copy instead of
piling up duplicates; a different model or threshold set gives new objects.
"""

from __future__ import annotations

import io
import json
import os
import uuid
import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from cxr_core.errors import ReportError
from cxr_core.reporting.study import StudyResult
from cxr_core.version import __version__

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_UID_NAMESPACE = uuid.UUID(
    "6f1d1c0e-8a52-5b7e-9d0a-2c8f3b1e4a77"
)  # fixed: the same parts, the same UID
SERIES_NUMBERS = {"sr": 9901, "sc": 9902, "seg": 9903}
"""Series numbers of our objects: high, so they sort after the acquisition's own series."""


def read_source_header(source: bytes | str | os.PathLike[str], name: str = "") -> Dataset:
    """The header (no pixel data) of a DICOM film, checked to carry the identifiers we link to.

    Raises ``ReportError`` for a file that is not DICOM or lacks a study / series / instance UID.
    """
    label = name or (os.fspath(source) if not isinstance(source, bytes) else "uploaded file")
    handle = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            header = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for non-DICOM bytes
        raise ReportError(not_dicom_message(label)) from exc
    missing = [k for k in REQUIRED_UIDS if not str(header.get(k, "")).strip()]
    if "Rows" not in header and "SOPClassUID" not in header:
        raise ReportError(not_dicom_message(label))
    if missing:
        raise ReportError(
            f"{label}: the DICOM header lacks {', '.join(missing)}, so results cannot be linked to "
            "its study; re-export the film from the PACS with its identifiers."
        )
    return header


def not_dicom_message(label: str) -> str:
    """Why a non-DICOM film gets no DICOM results (see the module docstring)."""
    return (
        f"{label} is not a DICOM file: DICOM results (SR, overlay, SEG) need the film's patient, study "
        "and series to attach to, and inventing them would put orphan objects in a PACS. "
        "Its results are in the predictions table and the PDF report."
    )


def derived_uid(*parts: str) -> str:
    """A UID determined by ``parts``: 2.25 followed by a name-based (SHA-1) UUID of them.

    ISO/IEC 9834-8 makes any UUID a UID under the 2.25 arc, so no organisation root is needed.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(parts)).int}"


def result_uid(source: Dataset, result: StudyResult, kind: str) -> str:
    """SOP Instance UID of our ``kind`` object ('sr', 'sc', 'seg') for this film and result."""
    # The calls and thresholds, not the probabilities: a film scored in another batch may differ
    # in the last bit of a float, and must still get the same objects.
    calls = [(f.name, f.threshold, f.called) for f in result.findings]
    return derived_uid(
        str(source.SOPInstanceUID),
        result.model.weights_sha256,
        json.dumps([calls, result.outcome.outcome, result.outcome.scored_anyway]),
        result.lung_model.weights_sha256 if result.lung_model is not None else "",
        __version__,
        kind,
    )


def series_uid(source: Dataset, result: StudyResult, kind: str) -> str:
    """Series Instance UID of our ``kind`` objects in this film's study: one series per model."""
    return derived_uid(str(source.StudyInstanceUID), result.model.weights_sha256, kind)


def instance_number(source: Dataset) -> int:
    """The film's own Instance Number, so results of two films in one series stay in their order."""
    try:
        return max(1, int(source.get("InstanceNumber") or 1))
    except (TypeError, ValueError):
        return 1
