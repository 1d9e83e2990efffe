"""The lung mask of one film as a DICOM Segmentation (binary, one segment: Lung).

Written when the lung model ran on the film. The mask is on the film's own pixel grid, which
the SEG references through its source image (spatial locations preserved). It carries no Pixel
Measures: a projection radiograph has no frame of reference or slice thickness, and highdicom
cannot read back a SEG whose pixel measures lack the slice thickness.
"""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from cxr_core.errors import ReportError
from cxr_core.reporting import codes
from cxr_core.reporting.dicom_source import (
    SERIES_NUMBERS,
    instance_number,
    result_uid,
    series_uid,
)
from cxr_core.reporting.study import StudyResult
from cxr_core.version import __version__

SERIES_DESCRIPTION = "cxr AI lung segmentation - research"
SEGMENT_LABEL = "Lungs"


def lung_segment(result: StudyResult) -> hd.seg.SegmentDescription:
    """The one segment: the lungs, found automatically by the lung model."""
    lung_model = result.lung_model
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.ANATOMICAL_STRUCTURE,
        segmented_property_type=codes.LUNG,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=lung_model.name[:64],
            family=codes.AI_FAMILY,
            version=lung_model.version[:64],
            parameters={"weights SHA-256": lung_model.weights_sha256},
        ),
    )


def build_seg(result: StudyResult, source: Dataset) -> hd.seg.Segmentation:
    """The SEG of one film's lung mask (``source``: the film's header).

    Raises ``ReportError`` when the lung model did not run or its mask does not match the film.
    """
    if result.lung_mask is None or result.lung_model is None:
        raise ReportError(f"{result.name}: the lung model did not run, so there is no lung mask")
    mask = np.asarray(result.lung_mask, dtype=bool)
    if mask.shape != (int(source.Rows), int(source.Columns)):
        raise ReportError(
            f"{result.name}: the lung mask is {mask.shape[1]}x{mask.shape[0]} but the film is "
            f"{source.Columns}x{source.Rows}; the mask must be on the film's own pixels"
        )
    grid = copy.deepcopy(source)
    for keyword in ("PixelSpacing", "FrameOfReferenceUID"):
        if keyword in grid:
            delattr(grid, keyword)
    seg = hd.seg.Segmentation(
        source_images=[grid],
        pixel_array=mask[None].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[lung_segment(result)],
        series_instance_uid=series_uid(source, result, "seg"),
        series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=result_uid(source, result, "seg"),
        instance_number=instance_number(source),
        manufacturer=codes.MANUFACTURER,
        manufacturer_model_name=result.lung_model.name[:64],
        software_versions=f"cxr {__version__}",
        device_serial_number=result.lung_model.weights_sha256[:64],
        series_description=SERIES_DESCRIPTION,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
    )
    seg.PatientOrientation = list(source.get("PatientOrientation", []) or [])
    return seg
