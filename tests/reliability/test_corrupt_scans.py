"""Corrupt scans are refused (decoder warnings, flat bands inside the image), real films are not."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_core.data.imaging import load_image
from cxr_core.data.imaging.integrity import interior_flat_run, jpeg_corruption
from cxr_core.errors import CorruptImageError, CXRError
from tests.reliability import crafted

SEED = 14


@pytest.fixture(scope="module")
def originals(shared_data):
    found = crafted.real_sources(shared_data)
    if "kermany.jpeg" not in found or "nih.png" not in found:
        pytest.skip("real Kermany JPEG / NIH PNG not found")
    return crafted.fuzz_originals(found)


def _flat_bands_added(source: bytes, mutant: bytes) -> int:
    return (crafted.flat_lines(mutant) or 0) - (crafted.flat_lines(source) or 0)


def test_desynchronised_jpeg_mutants_are_refused_not_scored(originals):
    """The fuzz mutants that used to load with 16-208 flat rows (one flipped bit -> 176 white
    rows) are refused as corrupt; a lenient decode shows each has bands its original lacks."""
    damaged = [
        (name, data)
        for source, name, data in crafted.fuzz_mutants(originals, 1000, SEED)
        if ".dcm" not in name
        and source.endswith(".jpeg")
        and _flat_bands_added(originals[source], data) >= crafted.CORRUPT_FLAT_ROWS
    ]
    assert len(damaged) >= 4, [n for n, _ in damaged]
    for name, data in damaged:
        try:
            load_image(data, name=name)
        except CXRError as exc:
            assert name in str(exc)
        else:
            pytest.fail(f"{name} was accepted with flat bands")


def test_one_flipped_bit_in_a_real_jpeg_is_named_by_the_decoder(originals):
    data = crafted.desynchronised_jpeg(originals["kermany.jpeg"])
    assert jpeg_corruption(data).startswith("Corrupt JPEG data")
    with pytest.raises(CorruptImageError, match="flipped.jpeg: the JPEG data is damaged"):
        load_image(data, name="flipped.jpeg")
    assert jpeg_corruption(originals["kermany.jpeg"]) is None
    assert load_image(originals["kermany.jpeg"], name="ok.jpeg").pixels.shape == (224, 224)


def test_a_zeroed_band_in_native_dicom_is_refused(originals):
    """Native DICOM has no checksum: a zeroed stretch of pixel data decodes without complaint."""
    gray = crafted.gray_of(originals["nih.png"])
    ds = crafted.dicom_dataset(crafted.to_12bit(gray))
    pixels = ds.pixel_array.copy()
    pixels[100:140] = 0
    ds.PixelData = pixels.tobytes()
    with pytest.raises(CorruptImageError, match="rows 101-140 of 256 are one flat value"):
        load_image(crafted.dicom_bytes(ds), name="zeroed.dcm")
    ok = crafted.dicom_dataset(crafted.to_12bit(gray))
    assert load_image(crafted.dicom_bytes(ok), name="ok.dcm").pixels.shape == (256, 256)


def test_padding_at_the_edges_is_not_damage(originals):
    """Letterboxed and square-padded films have flat bands that touch an edge: accepted."""
    gray = crafted.gray_of(originals["nih.png"])
    padded = np.zeros((400, 300), np.uint8)
    padded[72:328, 22:278] = gray
    buffer = io.BytesIO()
    Image.fromarray(padded).save(buffer, "PNG")
    assert load_image(buffer.getvalue(), name="padded.png").pixels.shape == (400, 300)
    assert interior_flat_run(padded / 255.0) == (0, 0, 0.0)
    banded = padded.copy()
    banded[150:200] = 17
    assert interior_flat_run(banded / 255.0)[:2] == (150, 200)
    assert interior_flat_run(banded.T / 255.0) == (0, 0, 0.0)  # columns: no interior band
    buffer = io.BytesIO()
    Image.fromarray(banded).save(buffer, "PNG")  # a drawing: PNG has its own checksums
    assert load_image(buffer.getvalue(), name="drawing.png").pixels.shape == (400, 300)
    buffer = io.BytesIO()
    Image.fromarray(banded).save(buffer, "TIFF")  # no checksum: the band is taken as damage
    with pytest.raises(CorruptImageError, match="rows 151-200 of 400"):
        load_image(buffer.getvalue(), name="banded.tif")


def _real_images(shared_data: Path, per_set: int | None) -> list[Path]:
    sets = [
        shared_data / "nih14" / "images",
        shared_data / "pneumonia",
        shared_data / "covid19",
        shared_data / "lungmasks" / "montgomery" / "images",
    ]
    found = []
    for folder in sets:
        files = sorted(
            p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpeg", ".jpg")
        )
        found += files if per_set is None else files[:: max(1, len(files) // per_set)]
    return found


def _refused(paths: list[Path]) -> list[str]:
    refused = []
    for path in paths:
        try:
            load_image(path)
        except CXRError as exc:
            refused.append(str(exc))
    return refused


def test_real_films_are_not_refused_sample(shared_data):
    paths = _real_images(shared_data, per_set=60)
    assert len(paths) >= 200
    assert _refused(paths) == []


@pytest.mark.slow
def test_no_real_film_of_the_shared_data_is_refused(shared_data):
    """The false-refusal rate of the corrupt-scan rules on ALL real images (8,333): zero."""
    paths = _real_images(shared_data, per_set=None)
    assert len(paths) > 8000
    refused = _refused(paths)
    assert refused == [], json.dumps(refused[:5])
