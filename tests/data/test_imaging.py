"""load_image on crafted bad/odd files (written to tmp_path) and on real radiographs."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000MC,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from cxr_core.data import imaging
from cxr_core.data.imaging import (
    SUPPORTED_EXTENSIONS,
    ImageLimits,
    LoadedImage,
    load_image,
)
from cxr_core.errors import ImageLoadError
from tests.reliability.crafted import dicom_dataset, jpeg_dicom, jpeg_with_size, png_lying_height

RNG = np.random.default_rng(1234)


# --------------------------------------------------------------------------- file builders


def png_bytes(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG") if mode else Image.fromarray(arr).save(
        buf, "PNG"
    )
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a size; its image data is a token, as in a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def with_sbit(png: bytes, bits: int) -> bytes:
    """Insert an sBIT chunk right after IHDR (signature 8 bytes + IHDR 25 bytes)."""
    return png[:33] + png_chunk(b"sBIT", bytes([bits])) + png[33:]


def save_dicom(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def gradient12(h: int = 32, w: int = 48) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) * 4095 // (h * w - 1)).astype(np.uint16)


def expect_error(source, *fragments: str, **kwargs) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(source, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return info.value


# --------------------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.png", "nope.png", "file not found")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    expect_error(path, "empty.png", "empty (0 bytes)")


def test_folder_is_not_an_image(tmp_path):
    expect_error(tmp_path, "folder")


def test_truncated_png_is_rejected_and_chained(tmp_path):
    data = png_bytes(RNG.integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    err = expect_error(path, "cut.png", "truncated")
    assert err.__cause__ is not None  # the Pillow error is chained, not shown as a traceback


def test_png_cut_after_image_data_is_still_rejected(tmp_path):
    data = png_bytes(RNG.integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "no_iend.png"
    path.write_bytes(data[:-12])  # all pixels present, IEND chunk missing
    expect_error(path, "no_iend.png", "damaged or truncated")


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes(Image.fromarray(RNG.integers(0, 255, (64, 64), dtype=np.uint8)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    expect_error(path, "cut.jpg", "JPEG", "truncated")


def test_text_renamed_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("Patient notes: not an image at all\n")
    expect_error(path, "notes.png", "text, not an image")


def test_random_bytes_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(bytes(RNG.integers(128, 256, 5000, dtype=np.uint8)))
    expect_error(path, "noise.jpg", "not a recognised image")


def test_unsupported_format_is_named(tmp_path):
    path = tmp_path / "anim.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, "GIF")
    expect_error(path, "anim.png", "GIF", "not supported")


def test_png_header_claiming_10_billion_pixels(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))
    expect_error(path, "bomb.png", "10000000000 pixels", "decoded safely")


def test_pixel_limit_checked_from_header_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(10_000, 8_000))  # 80 M pixels: only the header is valid
    expect_error(path, "big.png", "80,000,000 pixels", "60,000,000 pixel limit")


def test_pixel_limit_lowered_on_small_real_image(tmp_path):
    path = tmp_path / "small.png"
    path.write_bytes(png_bytes(np.zeros((20, 30), np.uint8)))
    expect_error(path, "30x20 = 600 pixels", limits=ImageLimits(max_pixels=599))
    assert load_image(path, limits=ImageLimits(max_pixels=600)).pixels.shape == (20, 30)


def test_byte_limit_for_path_and_bytes(tmp_path):
    data = png_bytes(RNG.integers(0, 255, (64, 64), dtype=np.uint8))
    path = tmp_path / "heavy.png"
    path.write_bytes(data)
    small = ImageLimits(max_bytes=len(data) - 1)
    expect_error(path, "heavy.png", "limit", limits=small)
    expect_error(data, "upload.png", "limit", name="upload.png", limits=small)
    assert load_image(data, limits=ImageLimits(max_bytes=len(data))).pixels.shape == (64, 64)


def test_multipage_tiff_rejected(tmp_path):
    path = tmp_path / "pages.tif"
    frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (10, 20)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    expect_error(path, "pages.tif", "2 pages")


def test_png_whose_header_declares_more_rows_than_its_data(tmp_path):
    arr = RNG.integers(0, 256, (64, 40), dtype=np.uint8)
    path = tmp_path / "tall.png"
    path.write_bytes(png_lying_height(png_bytes(arr)))  # complete zlib stream, valid CRCs
    with Image.open(path) as lenient:
        lenient.load()  # Pillow pads the 64 missing rows with black and says nothing
        assert lenient.height == 128 and not np.asarray(lenient)[64:].any()
    expect_error(path, "tall.png", "IHDR", "declares 128 rows", "holds 64")


def test_interlaced_png_short_data(tmp_path):
    arr = RNG.integers(0, 256, (33, 17), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", interlace=1)
    path = tmp_path / "adam7.png"
    path.write_bytes(buf.getvalue())
    np.testing.assert_allclose(
        load_image(path).pixels, arr / 255.0, atol=1e-6
    )  # complete: accepted
    path.write_bytes(png_lying_height(buf.getvalue()))
    expect_error(path, "adam7.png", "interlaced", "truncated")


def test_jpeg_sof_declaring_2000_rows(tmp_path):
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    path = tmp_path / "tall.jpg"
    path.write_bytes(jpeg_with_size(jpeg_bytes(Image.fromarray(gray)), height=2000))
    with Image.open(path) as lenient:
        lenient.load()  # libjpeg fills rows 48..1999 and only warns
        assert lenient.height == 2000
    expect_error(path, "tall.jpg", "JPEG", "truncated", "frame header (SOF)")


def test_jpeg_cut_with_end_marker_appended(tmp_path):
    data = jpeg_bytes(Image.fromarray(RNG.integers(0, 255, (64, 64), dtype=np.uint8)))
    path = tmp_path / "cut_eoi.jpg"
    path.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    expect_error(path, "cut_eoi.jpg", "JPEG", "truncated", "scan data ends")


def test_jpeg_with_restart_markers_and_stray_marker_accepted(tmp_path):
    gray = RNG.integers(0, 255, (64, 80), dtype=np.uint8)
    data = jpeg_bytes(Image.fromarray(gray), restart_marker_blocks=2)
    assert b"\xff\xd0" in data
    path = tmp_path / "restart.jpg"
    path.write_bytes(data[:2] + b"\xff\xd0" + data[2:])  # a stray RST0 (no length field) after SOI
    img = load_image(path)
    with Image.open(io.BytesIO(data)) as raw:
        np.testing.assert_allclose(img.pixels, np.asarray(raw) / 255.0, atol=1e-6)
    cut = path.read_bytes()
    path.write_bytes(cut[: len(cut) // 2] + b"\xff\xd9")  # the stray marker must not hide the cut
    expect_error(path, "restart.jpg", "truncated")


def test_progressive_jpeg_complete_accepted_cut_refused(tmp_path):
    gray = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (80, 1))
    data = jpeg_bytes(Image.fromarray(gray), progressive=True)
    path = tmp_path / "progressive.jpg"
    path.write_bytes(data)
    assert np.abs(load_image(path).pixels - gray / 255.0).mean() < 0.02
    path.write_bytes(data[: len(data) * 2 // 3] + b"\xff\xd9")
    expect_error(path, "progressive.jpg", "truncated")


def test_real_radiographs_with_lying_headers_are_refused(tmp_path, nih14_root, pneumonia_root):
    png = min((nih14_root / "images").glob("*.png")).read_bytes()
    jpeg = min((pneumonia_root / "train" / "PNEUMONIA").glob("*.jpeg")).read_bytes()
    height = Image.open(io.BytesIO(jpeg)).height
    cases = {
        "nih_tall.png": png_lying_height(png),
        "kermany_tall.jpeg": jpeg_with_size(jpeg, height=2 * height),
        "kermany_half.jpeg": jpeg[: len(jpeg) // 2] + b"\xff\xd9",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        expect_error(tmp_path / name, name, "truncated")


@pytest.mark.parametrize(
    "fmt,ext,says",
    [
        ("PNG", ".png", "starts like a PNG file"),
        ("TIFF", ".tif", "starts like a TIFF"),
        ("BMP", ".bmp", "starts like a BMP"),
        ("JPEG", ".jpg", "header is damaged"),
    ],
)
def test_damaged_header_of_a_supported_format_is_named(tmp_path, fmt, ext, says):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (32, 32), dtype=np.uint8)).save(buf, fmt)
    path = tmp_path / f"cut{ext}"
    path.write_bytes(buf.getvalue()[:12])  # signature kept, header cut
    expect_error(path, path.name, says, "damaged")


def test_dangling_symlink(tmp_path):
    link = tmp_path / "gone.png"
    os.symlink(tmp_path / "moved_away.png", link)
    expect_error(link, "gone.png", "dangling", "moved_away.png")


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    expect_error(fifo, "pipe.png", "named pipe", "not a regular file")


def test_folder_named_like_an_image(tmp_path):
    (tmp_path / "x.png").mkdir()
    expect_error(tmp_path / "x.png", "x.png", "is a folder")


@pytest.mark.parametrize("fmt,ext", [("GIF", ".gif"), ("WEBP", ".webp"), ("JPEG2000", ".jp2")])
def test_recognised_but_unsupported_formats(tmp_path, fmt, ext):
    path = tmp_path / f"image{ext}"
    Image.fromarray(RNG.integers(0, 255, (16, 16), dtype=np.uint8)).save(path, fmt)
    expect_error(path, path.name, fmt, "not supported")


def test_decoded_bytes_limit_counts_channels_and_sample_size(tmp_path):
    path = tmp_path / "rgba16.png"
    ihdr = struct.pack(">IIBBBBB", 7000, 8000, 16, 6, 0, 0, 0)  # 56 MP: under the pixel limit
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )
    expect_error(path, "rgba16.png", "4 channel(s) x 2 byte(s)", "limit on decoded data")
    rgba = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    (tmp_path / "rgba.png").write_bytes(png_bytes(rgba))
    (tmp_path / "gray.png").write_bytes(png_bytes(rgba[..., 0]))
    limits = ImageLimits(max_decoded_bytes=20 * 30 * 2)
    expect_error(tmp_path / "rgba.png", "2,400 bytes", limits=limits)
    assert load_image(tmp_path / "gray.png", limits=limits).pixels.shape == (20, 30)


def test_jpeg_rgb_decoded_to_luma_keeps_file_mode(tmp_path):
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    path = tmp_path / "rgb.jpg"
    path.write_bytes(jpeg_bytes(Image.fromarray(np.stack([gray] * 3, axis=-1))))
    img = load_image(path)
    assert img.meta["mode"] == "RGB" and img.pixels.dtype == np.float32
    with Image.open(path) as raw:
        np.testing.assert_allclose(
            img.pixels, np.asarray(raw.convert("L")) / 255.0, atol=1.01 / 255
        )


def test_decoder_exception_becomes_image_load_error(tmp_path, monkeypatch):
    path = tmp_path / "ok.png"
    path.write_bytes(png_bytes(RNG.integers(0, 256, (8, 8), dtype=np.uint8)))

    def broken(*args, **kwargs):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(imaging.raster, "_pil_to_gray", broken)
    err = expect_error(path, "ok.png", "could not be decoded", "struct.error", "unpack requires")
    assert isinstance(err.__cause__, struct.error)


# --------------------------------------------------------------------------- odd but valid rasters


def test_8bit_png_exact_and_metadata(tmp_path):
    arr = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    path = tmp_path / "gray.png"
    path.write_bytes(png_bytes(arr))
    img = load_image(path)
    assert isinstance(img, LoadedImage) and img.name == str(path)
    assert img.pixels.dtype == np.float32 and img.pixels.shape == (40, 50)
    np.testing.assert_allclose(img.pixels, arr / 255.0, atol=1e-7)
    assert (
        img.meta["format"] == "PNG" and img.meta["size"] == [50, 40] and img.meta["bit_depth"] == 8
    )
    json.dumps(img.meta)


def test_16bit_png_full_range_divided_by_65535(tmp_path):
    arr = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "full16.png"
    path.write_bytes(png_bytes(arr))
    img = load_image(path)
    assert img.meta["mode"] == "I;16" and img.meta["bits_stored"] == 16
    np.testing.assert_allclose(img.pixels, arr / 65535.0, rtol=1e-6)


def test_12bit_data_in_16bit_png_divided_by_4095(tmp_path):
    arr = np.array([[0, 100, 2048, 3000]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "twelve.png"
    path.write_bytes(png_bytes(arr))
    img = load_image(path)
    assert img.meta["bits_stored"] == 12
    np.testing.assert_allclose(img.pixels, arr / 4095.0, rtol=1e-6)  # not stretched to its max 3000


def test_png_sbit_chunk_decides_the_bit_depth(tmp_path):
    arr = np.array([[0, 10, 500, 1000]], dtype=np.uint16).repeat(4, axis=0)
    path = tmp_path / "sbit.png"
    path.write_bytes(with_sbit(png_bytes(arr), 14))
    img = load_image(path)
    assert img.meta["bits_source"] == "PNG sBIT chunk"
    np.testing.assert_allclose(img.pixels, arr / 16383.0, rtol=1e-6)


def test_16bit_tiff(tmp_path):
    arr = np.linspace(0, 65535, 24 * 32).reshape(24, 32).astype(np.uint16)
    path = tmp_path / "scan.tiff"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert img.meta["format"] == "TIFF" and img.meta["bit_depth"] == 16
    np.testing.assert_allclose(img.pixels, arr / 65535.0, rtol=1e-6)


def test_float_tiff_min_max(tmp_path):
    arr = np.linspace(-3.0, 5.0, 64, dtype=np.float32).reshape(8, 8)
    path = tmp_path / "float.tif"
    Image.fromarray(arr, mode="F").save(path)
    np.testing.assert_allclose(load_image(path).pixels, (arr + 3.0) / 8.0, atol=1e-6)


def test_rgba_composited_on_black(tmp_path):
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, 0, 3], rgba[:, 1, 3], rgba[:, 2, 3] = 255, 128, 0
    path = tmp_path / "alpha.png"
    path.write_bytes(png_bytes(rgba))
    img = load_image(path)
    np.testing.assert_allclose(img.pixels[0], [200 / 255, 200 / 255 * 128 / 255, 0.0], atol=1e-6)
    assert img.meta["alpha"] == "composited on black"


def test_gray_alpha_la(tmp_path):
    la = np.stack([np.full((4, 4), 100, np.uint8), np.full((4, 4), 255, np.uint8)], axis=-1)
    la[0, 0, 0] = 0  # not constant
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    img = load_image(path)
    assert img.meta["mode"] == "LA"
    assert img.pixels[1, 1] == pytest.approx(100 / 255, abs=1e-6)


def test_palette_png(tmp_path):
    arr = RNG.integers(0, 256, (16, 16), dtype=np.uint8)
    path = tmp_path / "palette.png"
    gray = Image.fromarray(arr)
    gray.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    with Image.open(path) as check:
        assert check.mode == "P"
        expected = np.asarray(check.convert("L"), dtype=np.float64) / 255.0
    np.testing.assert_allclose(load_image(path).pixels, expected, atol=1.0 / 255)


def test_cmyk_jpeg(tmp_path):
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    rgb = Image.fromarray(np.stack([gray] * 3, axis=-1))
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(jpeg_bytes(rgb.convert("CMYK")))
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    img = load_image(path)
    assert img.pixels.shape == (48, 64) and img.meta["mode"] == "CMYK"
    assert np.abs(img.pixels - gray / 255.0).mean() < 0.03  # lossy, but the ramp survives


def test_exif_rotated_jpeg(tmp_path):
    stored = np.zeros((20, 40), np.uint8)
    stored[:8, :8] = 255  # bright block at stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg_bytes(Image.fromarray(stored), exif=exif.tobytes()))
    img = load_image(path)
    assert img.pixels.shape == (40, 20) and img.meta["orientation"] == 6
    assert (
        img.pixels[:8, -8:].mean() > 0.9 and img.pixels[:8, :8].mean() < 0.1
    )  # top-left -> top-right


def test_bilevel_bmp(tmp_path):
    arr = np.zeros((8, 8), bool)
    arr[2:5, 2:5] = True
    path = tmp_path / "mask.bmp"
    Image.fromarray(arr).save(path)
    img = load_image(path)
    assert img.meta["format"] == "BMP"
    np.testing.assert_array_equal(img.pixels, arr.astype(np.float32))


def test_content_not_extension_decides_format(tmp_path):
    arr = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    path = tmp_path / "actually_png.jpg"
    path.write_bytes(png_bytes(arr))
    assert load_image(path).meta["format"] == "PNG"


def test_bytes_input_with_name():
    arr = RNG.integers(0, 256, (10, 12), dtype=np.uint8)
    img = load_image(png_bytes(arr), name="upload_from_dashboard.png")
    assert img.name == "upload_from_dashboard.png"
    np.testing.assert_allclose(img.pixels, arr / 255.0, atol=1e-7)
    expect_error(b"garbage bytes", "upload_from_dashboard.png", name="upload_from_dashboard.png")


def test_constant_image_is_zeros(tmp_path):
    path = tmp_path / "flat.png"
    path.write_bytes(png_bytes(np.full((16, 16), 77, np.uint8)))
    img = load_image(path)
    assert img.meta["constant"] is True
    np.testing.assert_array_equal(img.pixels, np.zeros((16, 16), np.float32))


def test_supported_extensions():
    assert SUPPORTED_EXTENSIONS == {
        ".png",
        ".jpg",
        ".jpeg",
        ".bmp",
        ".tif",
        ".tiff",
        ".dcm",
        ".dicom",
    }


# --------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_min_max_and_metadata(tmp_path):
    arr = gradient12()
    path = save_dicom(dicom_dataset(arr, PatientID="P0042"), tmp_path / "m2.dcm")
    img = load_image(path)
    np.testing.assert_allclose(img.pixels, arr / 4095.0, atol=1e-6)
    meta = img.meta
    assert meta["format"] == "DICOM" and meta["photometric_interpretation"] == "MONOCHROME2"
    assert (
        meta["patient_id"] == "P0042" and meta["view_position"] == "PA" and meta["modality"] == "DX"
    )
    assert (
        meta["voi"].startswith("divided by 4095")
        and meta["inverted"] is False
        and meta["size"] == [48, 32]
    )
    json.dumps(meta)


def test_dicom_without_window_reads_like_the_same_pixels_as_png(tmp_path):
    """One intensity rule: an 8-bit DICOM without a window is divided by 255, as a PNG is,
    not stretched to its own min and max."""
    arr = RNG.integers(40, 200, (24, 20), dtype=np.uint8)
    dicom = load_image(save_dicom(dicom_dataset(arr, bits=8), tmp_path / "eight.dcm"))
    png = load_image(png_bytes(arr), name="eight.png")
    np.testing.assert_allclose(dicom.pixels, png.pixels, atol=1e-7)
    assert dicom.meta["voi"] == "divided by 255 (stored bit depth)"


def test_dicom_monochrome1_is_inverted(tmp_path):
    arr = gradient12()
    m2 = load_image(save_dicom(dicom_dataset(arr, "MONOCHROME2"), tmp_path / "m2.dcm"))
    m1 = load_image(save_dicom(dicom_dataset(arr, "MONOCHROME1"), tmp_path / "m1.dcm"))
    assert m1.meta["inverted"] is True
    np.testing.assert_allclose(m1.pixels, 1.0 - m2.pixels, atol=1e-6)


def test_dicom_rescale_then_window_in_rescaled_units(tmp_path):
    stored = np.array([[0, 250, 375, 500, 750, 1000]], dtype=np.uint16).repeat(2, axis=0)
    ds = dicom_dataset(stored)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # values -1000 .. 1000
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 0, 1000, "LINEAR_EXACT"
    img = load_image(save_dicom(ds, tmp_path / "rescaled.dcm"))
    np.testing.assert_allclose(img.pixels[0], [0, 0, 0.25, 0.5, 1.0, 1.0], atol=1e-6)
    assert img.meta["rescale"] == {"slope": 2.0, "intercept": -1000.0}


def test_dicom_window_center_width_linear(tmp_path):
    arr = gradient12()
    ds = dicom_dataset(arr)
    ds.WindowCenter, ds.WindowWidth = [2048, 1000], [1024, 4000]  # the first window is used
    img = load_image(save_dicom(ds, tmp_path / "window.dcm"))
    c, w = 2048 - 0.5, 1024 - 1  # DICOM PS3.3 C.11.2.1.2.1
    expected = np.clip((arr - c) / w + 0.5, 0, 1)
    np.testing.assert_allclose(img.pixels, expected, atol=1e-5)
    assert img.meta["voi"] == "window" and img.meta["window"]["center"] == 2048.0


def test_dicom_window_on_an_image_larger_than_one_processing_block(tmp_path):
    arr = (np.add.outer(np.arange(2200), np.arange(2000)) % 4096).astype(np.uint16)  # 4.4 M px
    ds = dicom_dataset(arr, "MONOCHROME1")
    ds.WindowCenter, ds.WindowWidth = 2048, 1024
    img = load_image(save_dicom(ds, tmp_path / "large.dcm"))
    c, w = 2048 - 0.5, 1024 - 1
    expected = 1.0 - np.clip((arr - c) / w + 0.5, 0, 1)
    np.testing.assert_allclose(img.pixels, expected, atol=1e-5)
    assert img.pixels.dtype == np.float32 and img.meta["voi"] == "window"


def test_dicom_voi_lut_sequence_scaled_by_its_own_range(tmp_path):
    arr = gradient12()
    ds = dicom_dataset(arr)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]  # claims 16-bit output ...
    item.add_new(0x00283006, "US", [min(v, 1000) for v in range(4096)])  # ... but uses 0..1000
    ds.VOILUTSequence = Sequence([item])
    img = load_image(save_dicom(ds, tmp_path / "voilut.dcm"))
    np.testing.assert_allclose(img.pixels, np.minimum(arr, 1000) / 1000.0, atol=1e-6)
    assert img.meta["voi"] == "VOI LUT"


def voi_item(descriptor: list[int], entries, vr: str = "US") -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new(0x00283006, vr, entries)
    return item


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_dicom_8bit_voi_lut_with_4096_entries(tmp_path, vr):
    arr = gradient12()
    lut = np.arange(4096) // 16  # 8-bit entries 0..255, 16 inputs per output level
    ds = dicom_dataset(arr)
    entries = lut.astype(np.uint8).tobytes() if vr == "OW" else [int(v) for v in lut]
    ds.VOILUTSequence = Sequence([voi_item([4096, 0, 8], entries, vr)])
    img = load_image(save_dicom(ds, tmp_path / f"lut8_{vr}.dcm"))
    np.testing.assert_allclose(img.pixels, (arr // 16) / 255.0, atol=1e-6)  # hand-computed lookup


def test_dicom_16bit_voi_lut_with_offset_clamps_outside_inputs(tmp_path):
    arr = np.array([[0, 999, 1000, 1001, 1100, 1255, 1256, 4000]], dtype=np.uint16).repeat(
        2, axis=0
    )
    ds = dicom_dataset(arr)
    lut = [60000 - 200 * i for i in range(256)]  # decreasing, inputs 1000..1255
    ds.VOILUTSequence = Sequence([voi_item([256, 1000, 16], lut)])
    img = load_image(save_dicom(ds, tmp_path / "lut16.dcm"))
    low, high = lut[-1], lut[0]
    expected = [(lut[min(max(int(v) - 1000, 0), 255)] - low) / (high - low) for v in arr[0]]
    np.testing.assert_allclose(img.pixels[0], expected, atol=1e-6)


@pytest.mark.parametrize(
    "entries,vr", [(list(range(100)), "US"), (b"\x00\x01" * 100, "OW")], ids=["US", "OW"]
)
def test_dicom_voi_lut_shorter_than_descriptor(tmp_path, entries, vr):
    ds = dicom_dataset(gradient12())
    ds.VOILUTSequence = Sequence([voi_item([4096, 0, 16], entries, vr)])
    expect_error(
        save_dicom(ds, tmp_path / "short.dcm"), "short.dcm", "holds 100 entries", "declares 4,096"
    )


def test_dicom_voi_lut_descriptor_with_two_values(tmp_path):
    ds = dicom_dataset(gradient12())
    ds.VOILUTSequence = Sequence([voi_item([4096, 0], list(range(4096)))])
    expect_error(save_dicom(ds, tmp_path / "desc.dcm"), "desc.dcm", "descriptor", "3 numbers")


def test_dicom_values_wider_than_bits_stored(tmp_path):
    ds = dicom_dataset(gradient12())  # values up to 4095
    ds.BitsStored, ds.HighBit = 8, 7
    expect_error(
        save_dicom(ds, tmp_path / "bits8.dcm"),
        "bits8.dcm",
        "BitsStored = 8",
        "need 12 bits",
        "4,095",
    )


def test_dicom_signed_values_without_sign_extension(tmp_path):
    values = np.linspace(-2000, 2000, 32 * 48).astype(np.int16).reshape(32, 48)
    ds = dicom_dataset(values)
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = (
        values.view(np.uint16) & 0x0FFF
    ).tobytes()  # 12-bit two's complement, high bits 0
    img = load_image(save_dicom(ds, tmp_path / "signed.dcm"))
    np.testing.assert_allclose(img.pixels, (values + 2000) / 4000.0, atol=1e-6)


def test_dicom_jpeg_baseline_decodes_and_truncated_frames_are_refused(tmp_path):
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    frame = jpeg_bytes(Image.fromarray(gray))
    img = load_image(save_dicom(jpeg_dicom(gray, frame), tmp_path / "jpeg.dcm"))
    assert img.meta["transfer_syntax"] == "JPEG Baseline (Process 1)"
    assert np.abs(img.pixels - gray / 255.0).mean() < 0.02
    half = frame[: len(frame) // 2]
    expect_error(
        save_dicom(jpeg_dicom(gray, half), tmp_path / "half.dcm"),
        "half.dcm",
        "no end-of-image marker",
    )
    expect_error(
        save_dicom(jpeg_dicom(gray, half + b"\xff\xd9"), tmp_path / "half_eoi.dcm"),
        "half_eoi.dcm",
        "JPEG frame is truncated",
    )


def test_dicom_with_unknown_transfer_syntax_uid(tmp_path):
    data = save_dicom(dicom_dataset(gradient12()), tmp_path / "x.dcm").read_bytes()
    assert data.count(b"1.2.840.10008.1.2.1\x00") == 1
    path = tmp_path / "odd_uid.dcm"
    path.write_bytes(data.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.9.9.1\x00"))
    err = expect_error(path, "odd_uid.dcm", "could not be decoded")
    assert err.__cause__ is not None


def test_dicom_without_pixel_data(tmp_path):
    ds = dicom_dataset(gradient12())
    del ds.PixelData
    expect_error(save_dicom(ds, tmp_path / "report.dcm"), "report.dcm", "no pixel data")


def test_dicom_multiframe_rejected(tmp_path):
    frames = np.stack([gradient12()] * 3)
    ds = dicom_dataset(frames)
    assert ds.NumberOfFrames == 3
    expect_error(save_dicom(ds, tmp_path / "cine.dcm"), "cine.dcm", "multi-frame (3 frames)")


def test_dicom_pixel_limit_from_header_before_decoding(tmp_path):
    ds = dicom_dataset(gradient12())
    ds.Rows, ds.Columns = 65535, 65535  # pixel data is far too short: decoding would fail
    expect_error(
        save_dicom(ds, tmp_path / "huge.dcm"), "huge.dcm", "4,294,836,225 pixels", "pixel limit"
    )


def test_dicom_truncated_pixel_data(tmp_path):
    path = save_dicom(dicom_dataset(gradient12()), tmp_path / "cut.dcm")
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    expect_error(path, "cut.dcm", "DICOM")


def test_garbage_named_dcm(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00\x01\x02 definitely not dicom " * 10)
    expect_error(path, "garbage.dcm", "no DICOM header")


def test_dicom_without_preamble(tmp_path):
    arr = gradient12()
    ds = dicom_dataset(arr)
    del ds.file_meta  # a bare dataset: no 128-byte preamble, no "DICM", no file meta
    raw = io.BytesIO()
    ds.save_as(raw, implicit_vr=True, little_endian=True)
    data = raw.getvalue()
    assert data[128:132] != b"DICM" and data[:2] == b"\x08\x00"
    (tmp_path / "bare.dcm").write_bytes(data)
    for source, kwargs in ((tmp_path / "bare.dcm", {}), (data, {"name": "IMG0001"})):
        img = load_image(source, **kwargs)
        assert img.meta["preamble"] is False and img.meta["format"] == "DICOM"
        np.testing.assert_allclose(img.pixels, arr / 4095.0, atol=1e-6)


def test_dicom_as_bytes_with_name(tmp_path):
    arr = gradient12()
    data = save_dicom(dicom_dataset(arr), tmp_path / "x.dcm").read_bytes()
    img = load_image(data, name="upload.dcm")
    assert img.name == "upload.dcm"
    np.testing.assert_allclose(img.pixels, arr / 4095.0, atol=1e-6)


def test_dicom_constant_is_zeros(tmp_path):
    img = load_image(
        save_dicom(dicom_dataset(np.full((8, 8), 900, np.uint16)), tmp_path / "flat.dcm")
    )
    assert img.meta["constant"] is True and not img.pixels.any()


def test_dicom_rgb_to_gray(tmp_path):
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 128, 0
    rgb[0, 0] = 0
    img = load_image(save_dicom(dicom_dataset(rgb, "RGB", 8), tmp_path / "rgb.dcm"))
    assert img.pixels.shape == (6, 6)
    assert img.pixels[1, 1] == pytest.approx((0.299 * 255 + 0.587 * 128) / 255, abs=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_dicom_decodes_losslessly(tmp_path, syntax):
    arr = gradient12()
    ds = dicom_dataset(arr)
    ds.compress(syntax)
    img = load_image(save_dicom(ds, tmp_path / f"{syntax.keyword}.dcm"))
    assert img.meta["transfer_syntax"] == syntax.name
    np.testing.assert_allclose(img.pixels, arr / 4095.0, atol=1e-6)


def test_dicom_transfer_syntax_without_decoder(tmp_path):
    ds = dicom_dataset(gradient12())
    ds.file_meta.TransferSyntaxUID = JPEG2000MC
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    expect_error(save_dicom(ds, tmp_path / "mc.dcm"), "mc.dcm", JPEG2000MC.name, JPEG2000MC)


def test_missing_decoder_plugin_names_package(tmp_path, monkeypatch):
    ds = dicom_dataset(gradient12())
    ds.compress(RLELossless)
    path = save_dicom(ds, tmp_path / "rle.dcm")
    missing = SimpleNamespace(
        is_available=False, missing_dependencies=["pylibjpeg - requires pylibjpeg-rle>=2.0"]
    )
    monkeypatch.setattr(imaging.dicom, "get_decoder", lambda syntax: missing)
    expect_error(path, "rle.dcm", "RLE Lossless", "pylibjpeg-rle")


def test_pydicom_reads_our_builder_as_conformant(tmp_path):
    path = save_dicom(dicom_dataset(gradient12()), tmp_path / "ok.dcm")
    assert path.read_bytes()[128:132] == b"DICM"
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


# --------------------------------------------------------------------------- real radiographs


def _assert_radiograph(img: LoadedImage) -> None:
    assert img.pixels.dtype == np.float32 and img.pixels.ndim == 2
    assert 0.0 <= img.pixels.min() and img.pixels.max() <= 1.0 and img.pixels.std() > 0.05
    json.dumps(img.meta)


def test_real_nih_pngs(nih14_root):
    paths = sorted((nih14_root / "images").glob("*.png"))[:3]
    assert paths
    for path in paths:
        img = load_image(path)
        _assert_radiograph(img)
        assert img.pixels.shape == (256, 256)
        with Image.open(path) as raw:
            np.testing.assert_allclose(img.pixels, np.asarray(raw.convert("L")) / 255.0, atol=1e-6)


def test_real_kermany_jpeg_rgb_to_gray(pneumonia_root):
    path = next((pneumonia_root / "train" / "PNEUMONIA").glob("*.jpeg"))
    img = load_image(path)
    _assert_radiograph(img)
    with Image.open(path) as raw:
        assert raw.mode == "RGB"
        assert img.pixels.shape == (raw.height, raw.width)
        np.testing.assert_allclose(
            img.pixels, np.asarray(raw.convert("L")) / 255.0, atol=1.01 / 255
        )


def test_real_covid_png(covid_root):
    path = next((covid_root / "Covid-19").glob("*.png"))
    img = load_image(path)
    _assert_radiograph(img)
    with Image.open(path) as raw:
        assert img.pixels.shape == (raw.height, raw.width)
