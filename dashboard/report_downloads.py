"""The Predict page's report downloads: the PDF report, and the DICOM results of a DICOM film.

Built only when clicked (Streamlit calls the download's data function then): the overlay needs
one heatmap per called finding, which the page should not pay for on every rerun. The numbers
are the page's own (the same prediction, at the threshold set in force for this browser).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry
from cxr_core.artifacts.thresholds_store import ThresholdSet
from cxr_core.data.imaging import LoadedImage
from cxr_core.errors import ReportError
from cxr_core.inference.lungs import LungResult
from cxr_core.inference.predictor import Prediction, Predictor
from cxr_core.reporting.dicom_source import read_source_header
from cxr_core.reporting.export import dicom_objects, dicom_zip
from cxr_core.reporting.outcome import outcome_of
from cxr_core.reporting.pdf import build_pdf
from cxr_core.reporting.study import (
    ModelIdentity,
    ReportContext,
    StudyResult,
    ThresholdSource,
    build_study_result,
)
from dashboard import state


def _context(
    entry: CheckpointEntry, active: ThresholdSet, lungs: LungResult | None
) -> ReportContext:
    lung_model = state.lung_model()
    segmenter = lung_model.segmenter if lungs is not None else None
    return ReportContext(
        model=ModelIdentity.of_checkpoint(entry.model_path, entry.card, name=entry.name),
        thresholds=ThresholdSource(active.name, active.method, active.notes),
        lung_model=(
            ModelIdentity.of_checkpoint(segmenter.checkpoint.path, segmenter.checkpoint.card)
            if segmenter is not None
            else None
        ),
    )


def _upload_bytes(files: Sequence, digest: str) -> bytes | None:
    for upload in files:
        data = upload.getvalue()
        if hashlib.sha1(data).hexdigest() == digest:
            return data
    return None


def report_downloads(
    predictor: Predictor,
    entry: CheckpointEntry,
    active: ThresholdSet,
    files: Sequence,
    digest: str,
    image: LoadedImage,
    prediction: Prediction,
    lungs: LungResult | None = None,
) -> None:
    """Two download buttons for the film on screen: its PDF report and, for DICOM, its results."""
    context = _context(entry, active, lungs)

    def study() -> StudyResult:
        return build_study_result(
            predictor,
            context,
            name=image.name,
            prediction=prediction,
            outcome=outcome_of(prediction),
            image=image,
            lung_mask=lungs.mask if lungs is not None else None,
        )

    data = _upload_bytes(files, digest)
    header, why = None, ""
    try:
        header = read_source_header(data, image.name) if data is not None else None
    except ReportError as exc:
        why = str(exc)
    stem = Path(image.name).stem or "film"
    left, right = st.columns(2)
    left.download_button(
        "Report (PDF)",
        data=lambda: build_pdf(study(), header),
        file_name=f"{stem}_report.pdf",
        mime="application/pdf",
        on_click="ignore",
        icon=":material/picture_as_pdf:",
        key=f"report_pdf_{digest}",
        help="One page: the film, the overlay, findings with thresholds, gate warnings, model card, disclaimers.",
    )
    if header is None:
        right.caption(why or "DICOM results need the original DICOM file.")
        return
    right.download_button(
        "DICOM results (ZIP)",
        data=lambda: dicom_zip(dicom_objects(study(), header)),
        file_name=f"{stem}_dicom_results.zip",
        mime="application/zip",
        on_click="ignore",
        icon=":material/download:",
        key=f"report_dicom_{digest}",
        help="A findings SR, an overlay Secondary Capture when a finding is called and a lung SEG when the "
        "lung model ran, all in this film's study, ready to store in a PACS.",
    )
