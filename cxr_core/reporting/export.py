"""Writing a film's deliverables: the DICOM objects (SR, SC, SEG) and the PDF report.

:func:`dicom_objects` builds what a DICOM film gets (always the SR; the overlay when a finding
is called; the SEG when the lung model ran), :func:`write_dicom_objects` and :func:`dicom_zip`
put them on disk or in one download. :class:`StudyExporter` does all of it for each file of a
``cxr predict`` run (``--dicom-out`` / ``--pdf-out``) and keeps an ``index.csv`` of what was
written for which input, and why nothing was for the others.
"""

from __future__ import annotations

import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.errors import CXRError, ReportError
from cxr_core.inference.lungs import LungSegmenter
from cxr_core.inference.predictor import FileResult, Predictor
from cxr_core.reporting.dicom_sc import build_sc
from cxr_core.reporting.dicom_seg import build_seg
from cxr_core.reporting.dicom_source import not_dicom_message, read_source_header
from cxr_core.reporting.dicom_sr import build_sr
from cxr_core.reporting.outcome import outcome_of
from cxr_core.reporting.pdf import build_pdf
from cxr_core.reporting.study import ReportContext, StudyResult, build_study_result
from cxr_core.utils.atomic import write_atomically
from cxr_core.utils.csv_safe import write_records_csv

logger = logging.getLogger(__name__)

FILE_NAMES = {"sr": "findings_sr.dcm", "sc": "overlay_sc.dcm", "seg": "lungs_seg.dcm"}
INDEX_COLUMNS = ("input", "outcome", "reason", "study_instance_uid", "dicom", "pdf", "note")


@dataclass(frozen=True)
class DicomObjects:
    """The DICOM results of one film: the SR, and the overlay and lung SEG when there are any."""

    sr: Dataset
    sc: Dataset | None = None
    seg: Dataset | None = None

    def items(self) -> list[tuple[str, Dataset]]:
        """(kind, dataset) of each object present: 'sr', 'sc', 'seg'."""
        return [(k, d) for k, d in (("sr", self.sr), ("sc", self.sc), ("seg", self.seg)) if d]


def dicom_objects(result: StudyResult, source: Dataset) -> DicomObjects:
    """Every DICOM object ``result`` calls for, in the study of ``source`` (the film's header)."""
    return DicomObjects(
        sr=build_sr(result, source),
        sc=build_sc(result, source) if result.called and result.image is not None else None,
        seg=build_seg(result, source) if result.lung_mask is not None else None,
    )


def write_dicom_objects(objects: DicomObjects, folder: str | os.PathLike[str]) -> list[Path]:
    """Write each object to ``folder`` (atomically, DICOM Part 10 files); returns the paths."""
    written = []
    for kind, dataset in objects.items():
        path = Path(folder) / FILE_NAMES[kind]
        written.append(
            write_atomically(path, lambda tmp, d=dataset: d.save_as(tmp, enforce_file_format=True))
        )
    return written


def dicom_zip(objects: DicomObjects) -> bytes:
    """The objects as one ZIP of Part 10 files (the dashboard's download)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for kind, dataset in objects.items():
            part = io.BytesIO()
            dataset.save_as(part, enforce_file_format=True)
            archive.writestr(FILE_NAMES[kind], part.getvalue())
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


class StudyExporter:
    """The ``--dicom-out`` / ``--pdf-out`` step of ``cxr predict``, one file result at a time.

    A film that cannot get a deliverable (not DICOM, no study UID) gets a row in ``index.csv``
    saying why; the run goes on. Each film's DICOM objects go to ``DICOM_OUT/<file stem>/``, its
    report to ``PDF_OUT/<file stem>.pdf`` (stems made unique within the run).
    """

    def __init__(
        self,
        predictor: Predictor,
        context: ReportContext,
        *,
        dicom_out: str | os.PathLike[str] | None = None,
        pdf_out: str | os.PathLike[str] | None = None,
    ) -> None:
        self.predictor = predictor
        self.context = context
        self.dicom_out = Path(dicom_out) if dicom_out else None
        self.pdf_out = Path(pdf_out) if pdf_out else None
        self.rows: list[dict[str, str]] = []
        self._stems: set[str] = set()

    def _stem(self, path: str) -> str:
        """The file's stem, suffixed _2, _3... when an earlier file of the run had the same one."""
        stem = unique = _slug(Path(path).stem)
        n = 1
        while unique in self._stems:
            n += 1
            unique = f"{stem}_{n}"
        self._stems.add(unique)
        return unique

    def study_result(self, result: FileResult) -> tuple[StudyResult, LoadedImage | None]:
        """The :class:`StudyResult` of one file of the run (the film reloaded if it was refused)."""
        image = result.image
        if image is None:
            try:
                image = load_image(result.path)
            except (CXRError, OSError, ValueError):
                image = None
        outcome = outcome_of(result.prediction, error=result.error, readable=image is not None)
        study = build_study_result(
            self.predictor,
            self.context,
            name=Path(result.path).name,
            prediction=result.prediction,
            outcome=outcome,
            image=image,
            lung_mask=result.lungs.mask if result.lungs is not None else None,
        )
        return study, image

    def export(self, result: FileResult) -> None:
        """Write the deliverables of one file result and record them in the index.

        A film whose deliverables cannot be made gets its reason in the index; the run goes on.
        """
        try:
            self._export(result)
        except CXRError as exc:
            logger.warning("%s: no report written (%s)", result.path, exc)
            self.rows.append({"input": result.path, "note": f"no report written: {exc}"})

    def _export(self, result: FileResult) -> None:
        stem = self._stem(result.path)
        study, image = self.study_result(result)
        row = {"input": result.path, "outcome": study.outcome.outcome}
        row["reason"] = study.outcome.reason
        source, notes = None, []
        if image is not None and image.meta.get("format") == "DICOM":
            try:
                source = read_source_header(result.path)
            except ReportError as exc:
                notes.append(str(exc))
        elif self.dicom_out is not None:
            notes.append(_not_dicom(result.path, image))
        row["study_instance_uid"] = str(source.StudyInstanceUID) if source is not None else ""
        if self.dicom_out is not None and source is not None:
            folder = self.dicom_out / stem
            paths = write_dicom_objects(dicom_objects(study, source), folder)
            row["dicom"] = ";".join(str(p) for p in paths)
        if self.pdf_out is not None:
            path = self.pdf_out / f"{stem}.pdf"
            write_atomically(path, lambda tmp: tmp.write_bytes(build_pdf(study, source)))
            row["pdf"] = str(path)
        row["note"] = " ".join(notes)
        for note in notes:
            logger.warning("%s", note)
        self.rows.append(row)

    def close(self) -> list[Path]:
        """Write ``index.csv`` into each output folder; returns the index files."""
        written = []
        for folder in {p for p in (self.dicom_out, self.pdf_out) if p is not None}:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "index.csv"
            write_records_csv(path, self.rows, INDEX_COLUMNS)
            written.append(path)
        return written


def exporter_for(
    predictor: Predictor,
    checkpoint: str | os.PathLike[str],
    dicom_out: str | None,
    pdf_out: str | None,
    lungs: LungSegmenter | None = None,
) -> StudyExporter | None:
    """The exporter of a ``cxr predict`` run, or None when it asks for neither DICOM nor PDF."""
    if not dicom_out and not pdf_out:
        return None
    context = ReportContext.of_run(predictor, checkpoint, lungs=lungs)
    return StudyExporter(predictor, context, dicom_out=dicom_out, pdf_out=pdf_out)


def _not_dicom(path: str, image: LoadedImage | None) -> str:
    if image is None:
        return f"{path}: unreadable, so no DICOM results could be made from it."
    return not_dicom_message(path)
