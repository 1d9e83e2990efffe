"""Folders are listed by content: extensionless DICOM gets a row, every other file is counted."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from cxr_core.data.formats.files import list_image_files
from cxr_core.data.imaging import SNIFF_BYTES, load_image, sniff_kind
from cxr_core.errors import ImageLoadError
from tests.reliability import crafted

RNG = np.random.default_rng(25)


def _dx(path: Path, seed: int) -> Path:
    arr = np.random.default_rng(seed).integers(0, 4096, (64, 64), dtype=np.uint16)
    path.write_bytes(crafted.dicom_bytes(crafted.dicom_dataset(arr, PatientID=f"P{seed}")))
    return path


def _pacs_export(folder: Path, count: int) -> list[Path]:
    """What a PACS or DICOMDIR export writes: numbered files without extension, in sub-folders."""
    (folder / "SER001").mkdir(parents=True)
    return [_dx(folder / "SER001" / f"IM{i:06d}", i) for i in range(count)]


def test_a_folder_of_only_extensionless_dicom_gets_a_row_per_file(tmp_path):
    written = _pacs_export(tmp_path / "export", 12)
    listing = list_image_files([tmp_path / "export"])
    assert listing.images == written and listing.summary() == ""
    assert all(load_image(p).meta["format"] == "DICOM" for p in listing.images)


def test_every_other_file_is_counted_by_kind(tmp_path):
    folder = tmp_path / "mixed"
    _pacs_export(folder, 3)
    (folder / "notes.txt").write_text("reported by Dr X\n")
    (folder / "README").write_text("export of 2026-12-07\n")
    with zipfile.ZipFile(folder / "bundle", "w") as archive:
        archive.writestr("a.txt", "x")
    (folder / "report.pdf").write_bytes(b"%PDF-1.7\n...")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "scan").write_bytes(b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(64))  # JPEG 2000
    (folder / "named.png").write_text("not really a PNG")  # named like an image: gets a row
    listing = list_image_files([folder])
    names = [p.name for p in listing.images]
    assert names == ["IM000000", "IM000001", "IM000002", "named.png", "scan"]
    assert listing.summary() == "5 not images: 2 text, 1 PDF, 1 hidden, 1 zip"
    with pytest.raises(ImageLoadError, match="JPEG2000|JPEG 2000|not supported|not a recognised"):
        load_image(folder / "scan")


def test_a_folder_without_images_says_what_it_holds(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("x,y\n")
    (tmp_path / "c.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(ImageLoadError, match=r"no images \(3 not images: 2 text, 1 gzip\)"):
        list_image_files([tmp_path])


def test_real_radiographs_and_pydicom_files_are_found_without_their_extensions(
    nih14_root, pneumonia_root, tmp_path
):
    sources = [
        sorted((nih14_root / "images").glob("*.png"))[0],
        sorted((pneumonia_root / "train" / "NORMAL").glob("*.jpeg"))[0],
        Path(get_testdata_file("CT_small.dcm")),
        Path(get_testdata_file("MR_small.dcm")),
        Path(get_testdata_file("ExplVR_LitEndNoMeta.dcm")),  # no preamble, no DICM marker
    ]
    for i, source in enumerate(sources):
        shutil.copy(source, tmp_path / f"file{i}")
    listing = list_image_files([tmp_path])
    assert [p.name for p in listing.images] == [f"file{i}" for i in range(5)]
    kinds = [sniff_kind(p.read_bytes()[:SNIFF_BYTES]) for p in listing.images]
    assert kinds == ["PNG", "JPEG", "DICOM", "DICOM", "DICOM"]
    expected = load_image(sources[0]).pixels
    np.testing.assert_array_equal(load_image(tmp_path / "file0").pixels, expected)


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(8), "PNG"),
        (b"\xff\xd8\xff\xe0", "JPEG"),
        (b"II*\x00", "TIFF"),
        (b"MM\x00*", "TIFF"),
        (b"BM" + bytes(12), "BMP"),
        (bytes(128) + b"DICM", "DICOM"),
        (b"\x08\x00\x05\x00CS\x0a\x00", "DICOM"),
        (b"\xff\x4f\xff\x51", "JPEG 2000"),
        (b"GIF89a", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"),
        (b"%PDF-1.4", "PDF"),
        (b"PK\x03\x04", "zip"),
        (b"plain text", "text"),
        (b"", "empty"),
        (bytes(RNG.integers(0, 32, 40, dtype=np.uint8)) + b"\xff", "unknown"),
    ],
)
def test_sniff_kind(head, kind):
    assert sniff_kind(head) == kind


def test_dicom_stored_values_keep_full_depth(tmp_path):
    """The viewer's window/level works on the detector's 12 bits, not the 8-bit display."""
    arr = RNG.integers(0, 4096, (40, 30), dtype=np.uint16)
    ds = crafted.dicom_dataset(arr, bits=12)
    ds.WindowCenter, ds.WindowWidth = 1000, 400  # a narrow window clips most of the range
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    image = load_image(crafted.dicom_bytes(ds), name="w.dcm")
    np.testing.assert_array_equal(image.stored, arr)
    assert image.meta["rescale"] == {"slope": 1, "intercept": -1024}
    assert image.meta["window"]["center"] == 1000
    assert np.unique(image.pixels).size < np.unique(image.stored).size
    png = crafted.png_bytes(arr)
    assert load_image(png, name="a.png").stored is None
    assert isinstance(pydicom.dcmread(get_testdata_file("CT_small.dcm")), pydicom.Dataset)
