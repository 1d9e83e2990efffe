"""The overlay of one film's called findings as a DICOM Secondary Capture Image.

Built with highdicom's :class:`~highdicom.sc.SCImage` from the film's header, so it joins the
film's study (patient, study UID, accession) in a series of its own. Its pixels are
:func:`~cxr_core.reporting.overlay.burned_in_overlay` (RGB, 8 bit): the outlines and the legend
are burned in (Burned In Annotation YES). Only films with at least one called finding get one:
an overlay of nothing would add a series a reader opens for no reason.
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from cxr_core.errors import ReportError
from cxr_core.reporting.codes import MANUFACTURER
from cxr_core.reporting.dicom_source import (
    SERIES_NUMBERS,
    instance_number,
    result_uid,
    series_uid,
)
from cxr_core.reporting.overlay import burned_in_overlay
from cxr_core.reporting.study import StudyResult
from cxr_core.version import __version__

SERIES_DESCRIPTION = "cxr AI overlay - research, not for diagnosis"
DEFAULT_ORIENTATION = ("L", "F")  # a frontal chest film seen as usual: patient's left on the right


def build_sc(result: StudyResult, source: Dataset) -> hd.sc.SCImage:
    """The Secondary Capture of one film's overlay (``source``: the film's header).

    Raises ``ReportError`` when nothing is called (no overlay to show) or the result carries no
    image.
    """
    if not result.called:
        raise ReportError(f"{result.name}: no finding is called, so there is no overlay to store")
    if result.image is None:
        raise ReportError(f"{result.name}: the film's pixels are needed to draw its overlay")
    orientation = tuple(str(v) for v in source.get("PatientOrientation", []) or ())
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=burned_in_overlay(result),
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid(source, result, "sc"),
        sop_instance_uid=result_uid(source, result, "sc"),
        series_number=SERIES_NUMBERS["sc"],
        instance_number=instance_number(source),
        manufacturer=MANUFACTURER,
        patient_orientation=orientation if len(orientation) == 2 else DEFAULT_ORIENTATION,
        series_description=SERIES_DESCRIPTION,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        manufacturer_model_name=result.model.name[:64],
        software_versions=f"cxr {__version__}",
        device_serial_number=result.model.weights_sha256[:64],
    )
    sc.BurnedInAnnotation = "YES"
    # Says the SC shows an unpaired body part, so it needs no Laterality (dciodvfy checks this).
    sc.BodyPartExamined = str(source.get("BodyPartExamined") or "CHEST")
    sc.ImageComments = (
        f"Model {result.model.name}, weights SHA-256 {result.model.weights_sha256}. "
        "Not for diagnosis."
    )
    return sc
