"""A one-page PDF report of one film: film and overlay, findings, gate, model card, disclaimers.

For the referring clinician or a case conference, where there is no PACS viewer: the same
:class:`~cxr_core.reporting.study.StudyResult` the SR is built from, laid out with reportlab on
one A4 page (the content is shrunk to fit rather than spilling onto a second page). The study
block names the film by patient ID, accession number and study date when the film is DICOM;
patient names are never printed (the dashboard never reads them either).
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image as PILImage
from pydicom.dataset import Dataset
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import (
    Image,
    KeepInFrame,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from cxr_core.artifacts.catalog import macro_auroc
from cxr_core.reporting.dicom_sr import DISCLAIMER, gate_texts
from cxr_core.reporting.outcome import OUTCOME_LABELS
from cxr_core.reporting.overlay import (
    OUTLINE_LEVEL,
    OUTLINE_MEANING,
    colour_of,
    display_scale,
    film_rgb,
    outlined_film,
)
from cxr_core.reporting.study import StudyResult

PANEL_MM = 85.0
PANEL_PIXELS = 900  # the film panels' long side in the PDF: sharp in print, a small file
MARGIN_MM = 12.0
_ASCII = str.maketrans({"≥": ">=", "≤": "<=", "—": "-", "–": "-", "·": "-", "×": "x", "≈": "~"})


def _text(value: object) -> str:
    """Escaped for reportlab's mini-markup, in the Latin-1 glyphs of its built-in fonts."""
    return escape(str(value).translate(_ASCII).encode("latin-1", "replace").decode("latin-1"))


def _panel(rgb: np.ndarray) -> Image:
    """An image flowable at most PANEL_MM a side, embedded as JPEG (small, photographic)."""
    picture = PILImage.fromarray(rgb)
    picture.thumbnail((PANEL_PIXELS, PANEL_PIXELS))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    buffer.seek(0)
    scale = PANEL_MM * mm / max(picture.size)
    return Image(buffer, width=picture.size[0] * scale, height=picture.size[1] * scale)


def _study_lines(result: StudyResult, source: Dataset | None) -> list[str]:
    lines = [f"File: {result.name}"]
    if source is not None:
        fields = (
            ("Patient ID", "PatientID"),
            ("Accession", "AccessionNumber"),
            ("Study date", "StudyDate"),
            ("View", "ViewPosition"),
            ("Study UID", "StudyInstanceUID"),
        )
        lines += [f"{label}: {source.get(k)}" for label, k in fields if source.get(k)]
    else:
        lines.append("Not a DICOM file: no patient or study identifiers.")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return lines + [f"Report made: {stamp}"]


def _findings_table(result: StudyResult, styles) -> Table | Paragraph:
    if not result.findings:
        return Paragraph(
            _text(f"No findings: the film was {OUTCOME_LABELS[result.outcome.outcome]}."),
            styles["BodyText"],
        )
    colours = {f.name: colour_of(i) for i, f in enumerate(result.called)}
    rows = [["Finding", "Probability", "Threshold", "Called", ""]]
    for f in sorted(result.findings, key=lambda f: (not f.called, -f.probability, f.name)):
        threshold = "argmax" if f.threshold is None else f"{f.threshold:.3f}"
        rows.append(
            [_text(f.name), f"{f.probability:.3f}", threshold, "yes" if f.called else "no", ""]
        )
    table = Table(rows, colWidths=[60 * mm, 28 * mm, 28 * mm, 20 * mm, 8 * mm])
    style = [
        ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
        ("FONT", (0, 1), (-1, -1), "Helvetica", 8),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
        ("TOPPADDING", (0, 0), (-1, -1), 1),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
    ]
    for row, record in enumerate(rows[1:], start=1):
        if record[0] in colours:
            r, g, b = colours[record[0]]
            style.append(
                ("BACKGROUND", (4, row), (4, row), colors.Color(r / 255, g / 255, b / 255))
            )
            style.append(("FONT", (0, row), (3, row), "Helvetica-Bold", 8))
    table.setStyle(TableStyle(style))
    return table


def _model_lines(result: StudyResult) -> list[str]:
    card = result.model.card
    auroc = macro_auroc(card.validation)
    ci = card.validation.get("macro_auroc_ci") if card.validation else None
    lines = [
        f"Model {result.model.name}: {card.architecture}, {card.num_classes} classes "
        f"({card.label_space.get('name', '')}), version {result.model.version}",
        f"Weights SHA-256: {result.model.weights_sha256}",
    ]
    if auroc is not None:
        band = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, list) and len(ci) == 2 else ""
        lines.append(f"Validation macro AUROC {auroc:.3f}{band} (same source as training data)")
    if card.provenance:
        lines.append("Trained on: " + _shorten(card.provenance, 300))
    lines.append("Intended use: " + _shorten(card.intended_use, 300))
    return lines


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def _story(result: StudyResult, source: Dataset | None) -> list:
    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=8, leading=10)
    story: list = [
        Paragraph("Chest X-ray AI findings - NOT FOR DIAGNOSIS", styles["Title"]),
        Paragraph(_text(DISCLAIMER), small),
        Paragraph("<br/>".join(_text(line) for line in _study_lines(result, source)), small),
        Spacer(1, 3 * mm),
    ]
    if result.image is not None:
        scale = display_scale(result.image.pixels.shape)
        film = _panel(film_rgb(result.image.pixels, scale))
        if result.called:
            story.append(Table([[film, _panel(outlined_film(result, scale))]]))
            caption = "Left: the film. Right: " + OUTLINE_MEANING.format(
                method=result.heatmap_method, level=OUTLINE_LEVEL
            )
        else:
            story.append(Table([[film]]))
            caption = "The film. No finding is called, so there is no overlay."
        story.append(Paragraph(_text(caption), small))
    heading = styles["Heading4"]
    story += [
        Paragraph("Findings", heading),
        _findings_table(result, styles),
        Paragraph(_text(f"Thresholds: {result.thresholds.describe()}."), small),
        Paragraph("Input gate", heading),
        Paragraph("<br/>".join(_text(t) for t in gate_texts(result)), small),
        Paragraph("Model card", heading),
        Paragraph("<br/>".join(_text(t) for t in _model_lines(result)), small),
    ]
    return story


def build_pdf(result: StudyResult, source: Dataset | None = None) -> bytes:
    """The one-page PDF report of ``result`` (``source``: the film's DICOM header, if any)."""
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=MARGIN_MM * mm,
        rightMargin=MARGIN_MM * mm,
        topMargin=MARGIN_MM * mm,
        bottomMargin=MARGIN_MM * mm,
        title=f"cxr findings: {result.name}",
        author="cxr (research software)",
        subject="Not for diagnosis",
    )
    frame = KeepInFrame(document.width, document.height, _story(result, source), mode="shrink")
    document.build([frame])
    return buffer.getvalue()
