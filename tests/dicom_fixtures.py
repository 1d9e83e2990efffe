"""Real films as DICOM: the shared NIH PNGs wrapped as Digital X-Ray images, as a PACS holds them.

The pixels are the NIH film's, widened to 12 bits stored in 16 (as detectors deliver them); the
header carries what a chest X-ray from a modality carries (patient, study, series, instance,
DX modules), and passes ``dciodvfy`` itself, so any error in our derived objects is ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


@dataclass(frozen=True)
class FilmIds:
    """Who and what a test film is (what a PACS query would match on)."""

    patient_id: str
    study_uid: str
    accession: str
    study_date: str = "20240105"
    view: str = "PA"
    age: str = "056Y"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _dx_modules(ds: Dataset) -> None:
    """The DX Series / Image / Anatomy / Detector / Positioning attributes dciodvfy requires."""
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.AnatomicRegionSequence = Sequence([_code("43799004", "SCT", "Chest")])
    ds.ImageLaterality = "U"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.DetectorType = "DIRECT"
    ds.PositionerType = "NONE"
    ds.AcquisitionContextSequence = Sequence([])
    ds.PatientOrientation = ["L", "F"]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096


def film_dataset(png: Path, ids: FilmIds, *, scale: int = 1, instance: int = 1) -> Dataset:
    """A DX dataset of the NIH film ``png`` (``scale`` enlarges it, e.g. to real film sizes)."""
    gray = Image.open(png).convert("L")
    if scale != 1:
        gray = gray.resize((gray.width * scale, gray.height * scale), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray).astype(np.uint16) * 16 + 8  # 12 bits stored
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ids.study_uid, generate_uid()
    ds.PatientName, ds.PatientID = f"Test^{ids.patient_id}", ids.patient_id
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "", "M", ids.age
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = ids.study_date, "101500", ids.accession
    ds.ReferringPhysicianName, ds.StudyID, ds.StudyDescription = "", "1", "XR CHEST"
    ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = 1, instance, "NIH"
    ds.ViewPosition = ids.view
    ds.ViewCodeSequence = Sequence([_code("272479007", "SCT", "postero-anterior")])
    _dx_modules(ds)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    spacing = 0.143 * 1024 / 256 / scale
    ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing, spacing]
    ds.PixelData = pixels.tobytes()
    return ds


def write_film(png: Path, dest: Path, ids: FilmIds, **kwargs) -> Path:
    """``film_dataset`` saved as a DICOM Part 10 file at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    film_dataset(png, ids, **kwargs).save_as(dest, enforce_file_format=True)
    return dest


def new_ids(patient_id: str, accession: str, **kwargs) -> FilmIds:
    """Identifiers of a new study for ``patient_id``."""
    return FilmIds(patient_id=patient_id, study_uid=generate_uid(), accession=accession, **kwargs)
