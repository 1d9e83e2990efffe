"""Helpers that build small on-disk datasets under tmp_path for the adapter tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position"
)


def write_image(path: Path, size: int = 16, seed: int = 0) -> Path:
    """A tiny real image (format from the suffix) so adapters see genuine files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def make_image():
    return write_image


@pytest.fixture
def nih_dir(tmp_path: Path):
    """Build an NIH-style folder from CSV rows (without header); images are written for every row."""

    def build(
        rows: list[str], *, images: bool = True, header: str = NIH_HEADER, layout: str = "images"
    ) -> Path:
        root = tmp_path / "nih"
        root.mkdir(exist_ok=True)
        (root / "Data_Entry_2017.csv").write_text("\n".join([header, *rows]) + "\n")
        if images:
            for i, row in enumerate(rows):
                name = row.split(",")[0]
                folder = (
                    root / "images"
                    if layout == "images"
                    else root / f"images_{1 + i % 2:03d}" / "images"
                )
                write_image(folder / name, seed=i)
        return root

    return build


def write_dicom(path: Path, size: int = 16, seed: int = 0, **tags: object) -> Path:
    """A tiny real DICOM (8-bit MONOCHROME2) with the given header ``tags`` (ViewPosition=...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    for key, value in tags.items():
        setattr(ds, key, value)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    ds.set_pixel_data(pixels, "MONOCHROME2", 8)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def make_dicom():
    return write_dicom


def first_rows(source: Path, dest: Path, keep) -> Path:
    """A copy of a real label file (plain CSV) holding only the rows ``keep(frame)`` selects."""
    import pandas as pd

    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    frame[keep(frame)].to_csv(dest, index=False)
    return dest
