"""Crafted bad radiograph files, seeded mutants of real ones, and an isolated outcome classifier.

This module does not import ``cxr_core``: the loader under test is named by a dotted path and
run in a separate worker process, so that a decoder that hangs or crashes the interpreter is
seen as an outcome (hang / other exception) instead of taking the test run down with it, and
so that the same code measures any version of the loader.

Outcomes:

* ``accepted``  - the loader returned an image
* ``refused``   - the loader raised the project's error type (a clear refusal)
* ``other``     - any other exception (a batch run would abort or show a traceback)
* ``hang``      - no answer within the per-file timeout (the worker is killed and restarted)
* ``padded``    - accepted, although an independent check that refuses truncation shows the
  file's pixel data is shorter than its header claims (the decoder filled the gap)
* ``corrupt``   - (fuzz mutants) accepted, although an independent lenient decode of the mutant
  has at least :data:`CORRUPT_FLAT_ROWS` more flat rows or columns than the original's: the
  decoder filled damaged scan data with saturated blocks (a desynchronised JPEG)
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import multiprocessing as mp
import os
import struct
import sys
import traceback
import types
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

OUTCOMES = ("accepted", "refused", "other", "hang", "padded", "corrupt")
CORRUPT_FLAT_ROWS = 8  # one JPEG block row
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- file builders


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC, so only the intended lie is in the file."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk; stops at the first chunk that does not fit."""
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            break
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def png_from_chunks(chunks: Iterable[tuple[bytes, bytes]]) -> bytes:
    return PNG_SIGNATURE + b"".join(png_chunk(kind, payload) for kind, payload in chunks)


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **kwargs)
    return buf.getvalue()


def png_lying_height(png: bytes, factor: int = 2) -> bytes:
    """IHDR claims ``factor`` times the rows; the (complete, valid) zlib stream holds the real rows."""
    chunks = png_chunks(png)
    kind, ihdr = chunks[0]
    width, height = struct.unpack(">II", ihdr[:8])
    chunks[0] = (kind, struct.pack(">II", width, height * factor) + ihdr[8:])
    return png_from_chunks(chunks)


def jpeg_sof_offset(data: bytes) -> int | None:
    """Offset of the first SOFn marker (baseline, extended, progressive, lossless)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return pos
        if marker == 0xDA:
            return None
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return None


def jpeg_with_size(data: bytes, height: int | None = None, width: int | None = None) -> bytes:
    """The same JPEG with its SOF frame header declaring another size."""
    sof = jpeg_sof_offset(data)
    if sof is None:
        return data
    old_h, old_w = struct.unpack(">HH", data[sof + 5 : sof + 9])
    return data[: sof + 5] + struct.pack(">HH", height or old_h, width or old_w) + data[sof + 9 :]


def dicom_dataset(
    arr: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **tags: object
) -> Dataset:
    """A conformant single-frame secondary-capture DICOM holding ``arr``; ``tags`` add or override
    attributes (Modality DX and ViewPosition PA by default)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    # a UID drawn from the content, not at random: a random UID's length varies, which shifts
    # every byte after it and made the seeded mutants differ from run to run
    meta.MediaStorageSOPInstanceUID = generate_uid(
        entropy_srcs=[hashlib.sha256(arr.tobytes()).hexdigest(), photometric, str(bits), repr(tags)]
    )
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key, value in {
        "Modality": "DX",
        "ViewPosition": "PA",
        "PatientID": "CRAFTED",
        **tags,
    }.items():
        setattr(ds, key, value)
    ds.set_pixel_data(arr, photometric, bits, generate_instance_uid=False)
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def jpeg_dicom(gray8: np.ndarray, jpeg: bytes | None = None) -> Dataset:
    """A JPEG-baseline DICOM whose single frame is ``jpeg`` (by default ``gray8`` encoded by Pillow)."""
    ds = dicom_dataset(gray8, bits=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg if jpeg is not None else jpeg_bytes(Image.fromarray(gray8))])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def to_12bit(gray8: np.ndarray) -> np.ndarray:
    return (gray8.astype(np.uint32) * 4095 // 255).astype(np.uint16)


def voi_lut_item(descriptor: list[int], entries: list[int], vr: str = "US") -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new(0x00283006, vr, entries)
    return item


# --------------------------------------------------------------------------- the crafted set


@dataclasses.dataclass(frozen=True)
class Case:
    """A crafted file and what a careful loader must do with it (``refuse`` or ``any``)."""

    name: str
    path: Path
    expect: str
    why: str


def real_sources(shared_data: Path) -> dict[str, bytes]:
    """A few real radiographs to derive bad files from: NIH PNG, COVID PNG, Kermany JPEG."""
    picks = {
        "nih.png": sorted((shared_data / "nih14" / "images").glob("*.png"))[:1],
        "covid.png": sorted((shared_data / "covid19" / "Covid-19").glob("*.png"))[:1],
        "kermany.jpeg": sorted(
            (shared_data / "pneumonia" / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg")
        )[:1],
    }
    return {name: paths[0].read_bytes() for name, paths in picks.items() if paths}


def gray_of(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"))


def real_dicoms(sources: dict[str, bytes]) -> dict[str, bytes]:
    """DICOMs built with pydicom from a real radiograph: native 12-bit, JPEG baseline, RLE,
    JPEG 2000 and native with a VOI LUT."""
    gray = gray_of(sources.get("nih.png") or next(iter(sources.values())))
    gray12 = to_12bit(gray)
    built = {
        "native12.dcm": dicom_bytes(dicom_dataset(gray12)),
        "jpeg_baseline.dcm": dicom_bytes(jpeg_dicom(gray)),
    }
    for name, syntax in (("rle.dcm", RLELossless), ("j2k.dcm", JPEG2000Lossless)):
        ds = dicom_dataset(gray12)
        ds.compress(syntax, generate_instance_uid=False)
        built[name] = dicom_bytes(ds)
    lut = dicom_dataset(gray12)
    lut.VOILUTSequence = Sequence(
        [voi_lut_item([4096, 0, 16], [min(v, 3000) * 20 for v in range(4096)])]
    )
    built["voi_lut.dcm"] = dicom_bytes(lut)
    return built


def derived_rasters(sources: dict[str, bytes]) -> dict[str, bytes]:
    """Other encodings of a real radiograph: 16-bit, interlaced and RGBA PNG, progressive JPEG."""
    gray = gray_of(sources["nih.png"])
    out = {
        "nih16.png": png_bytes(to_12bit(gray)),
        "nih_rgba.png": png_bytes(np.dstack([gray, gray, gray, np.full_like(gray, 255)])),
        "nih_progressive.jpeg": jpeg_bytes(Image.fromarray(gray), progressive=True),
    }
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, "PNG", interlace=1)
    out["nih_interlaced.png"] = buf.getvalue()
    return out


def build_crafted_set(dest: Path, sources: dict[str, bytes]) -> list[Case]:
    """Write the crafted bad files to ``dest`` and say what is expected of each."""
    dest.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, content: bytes | None, expect: str, why: str) -> None:
        path = dest / name
        if content is not None:
            path.write_bytes(content)
        cases.append(Case(name, path, expect, why))

    png = sources["nih.png"]
    jpeg = sources["kermany.jpeg"]
    gray = gray_of(png)
    h = gray.shape[0]
    gray12 = to_12bit(gray)
    gray_jpeg = jpeg_bytes(Image.fromarray(gray))

    # truncated or lying rasters
    add(
        "png_ihdr_double_height.png",
        png_lying_height(png),
        "refuse",
        "IHDR declares 2x the rows in the data",
    )
    add(
        "png_ihdr_8x_height.png",
        png_lying_height(png, 8),
        "refuse",
        "IHDR declares 8x the rows in the data",
    )
    add("png_half_file.png", png[: len(png) // 2], "refuse", "file cut in half")
    add("png_no_iend.png", png[:-12], "refuse", "IEND chunk missing")
    add(
        "png_idat_half_stream.png",
        png_from_chunks([(k, v[: len(v) // 2] if k == b"IDAT" else v) for k, v in png_chunks(png)]),
        "refuse",
        "IDAT zlib stream cut in half, CRCs recomputed",
    )
    add(
        "jpeg_sof_double_height.jpg",
        jpeg_with_size(jpeg, height=2 * Image.open(io.BytesIO(jpeg)).height),
        "refuse",
        "SOF declares 2x the rows in the scan",
    )
    add(
        "jpeg_sof_2000_rows.jpg",
        jpeg_with_size(gray_jpeg, height=2000),
        "refuse",
        "SOF declares 2,000 rows",
    )
    add(
        "jpeg_half_plus_eoi.jpg",
        jpeg[: len(jpeg) // 2] + b"\xff\xd9",
        "refuse",
        "scan cut in half, EOI appended",
    )
    add("jpeg_half.jpg", jpeg[: len(jpeg) // 2], "refuse", "file cut in half")
    progressive = jpeg_bytes(Image.fromarray(gray), progressive=True)
    add(
        "jpeg_progressive_half_plus_eoi.jpg",
        progressive[: len(progressive) // 2] + b"\xff\xd9",
        "refuse",
        "progressive JPEG cut inside a scan, EOI appended",
    )

    # DICOM pixel data problems
    add(
        "dicom_jpeg_half_data.dcm",
        dicom_bytes(jpeg_dicom(gray, gray_jpeg[: len(gray_jpeg) // 2])),
        "refuse",
        "baseline JPEG frame cut in half",
    )
    add(
        "dicom_jpeg_half_plus_eoi.dcm",
        dicom_bytes(jpeg_dicom(gray, gray_jpeg[: len(gray_jpeg) // 2] + b"\xff\xd9")),
        "refuse",
        "baseline JPEG frame cut in half, EOI appended",
    )
    add(
        "dicom_jpeg_lying_rows.dcm",
        _dicom_jpeg_lying_rows(gray, gray_jpeg),
        "refuse",
        "JPEG frame and DICOM Rows declare 2x the rows in the scan",
    )
    native = dicom_dataset(gray12)
    raw = bytes(native.PixelData)
    native.PixelData = raw[: len(raw) // 2]
    add(
        "dicom_native_half_data.dcm",
        dicom_bytes(native),
        "refuse",
        "native pixel data half as long as Rows x Columns",
    )
    bits8 = dicom_dataset(gray12)
    bits8.BitsStored, bits8.HighBit = 8, 7
    add(
        "dicom_bitsstored8_on_12bit.dcm",
        dicom_bytes(bits8),
        "refuse",
        "BitsStored 8, values up to 4095",
    )
    bits10 = dicom_dataset(gray12)
    bits10.BitsStored, bits10.HighBit = 10, 9
    add(
        "dicom_bitsstored10_on_12bit.dcm",
        dicom_bytes(bits10),
        "refuse",
        "BitsStored 10, values up to 4095",
    )
    short = dicom_dataset(gray12)
    short.VOILUTSequence = Sequence([voi_lut_item([4096, 0, 16], list(range(100)))])
    add(
        "dicom_voi_lut_short.dcm",
        dicom_bytes(short),
        "refuse",
        "VOI LUT has 100 entries, descriptor says 4096",
    )
    short_ow = dicom_dataset(gray12)
    short_ow.VOILUTSequence = Sequence([voi_lut_item([4096, 0, 16], b"\x00\x01" * 50, vr="OW")])
    add(
        "dicom_voi_lut_short_ow.dcm",
        dicom_bytes(short_ow),
        "refuse",
        "OW VOI LUT with 50 of 4096 entries",
    )
    empty_lut = dicom_dataset(gray12)
    empty_lut.VOILUTSequence = Sequence([voi_lut_item([4096, 0, 16], [])])
    add("dicom_voi_lut_empty.dcm", dicom_bytes(empty_lut), "refuse", "VOI LUT without entries")
    lut8 = dicom_dataset(gray12)
    lut8.VOILUTSequence = Sequence(
        [voi_lut_item([4096, 0, 8], [v * 255 // 4095 for v in range(4096)])]
    )
    add(
        "dicom_voi_lut_8bit_4096.dcm",
        dicom_bytes(lut8),
        "any",
        "8-bit VOI LUT with 4096 entries (valid)",
    )
    bad_desc = dicom_dataset(gray12)
    bad_desc.VOILUTSequence = Sequence([voi_lut_item([4096, 0], list(range(4096)))])
    add(
        "dicom_voi_lut_two_value_descriptor.dcm",
        dicom_bytes(bad_desc),
        "refuse",
        "LUT descriptor with 2 values",
    )
    frames = dicom_dataset(np.stack([gray12] * 3))
    add("dicom_multiframe.dcm", dicom_bytes(frames), "refuse", "3 frames")
    for name, encoded in real_dicoms(sources).items():
        if name in ("rle.dcm", "j2k.dcm"):
            ds = pydicom.dcmread(io.BytesIO(encoded))
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            ds.PixelData = encapsulate([frame[: len(frame) * 9 // 10]])
            add(
                f"dicom_{Path(name).stem}_cut_frame.dcm",
                dicom_bytes(ds),
                "refuse",
                "compressed frame cut to 90%",
            )
    for fmt, ext, options in (
        ("BMP", ".bmp", {}),
        ("TIFF", ".tif", {}),
        ("TIFF", ".tiff", {"compression": "tiff_lzw"}),
    ):
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, fmt, **options)
        add(
            f"{fmt.lower()}_{options.get('compression', 'raw')}_cut{ext}",
            buf.getvalue()[: len(buf.getvalue()) * 2 // 3],
            "refuse",
            f"{fmt} cut to two thirds",
        )
    bmp = io.BytesIO()
    Image.fromarray(gray).save(bmp, "BMP")
    data = bmp.getvalue()
    add(
        "bmp_double_height.bmp",
        data[:22] + struct.pack("<i", 2 * h) + data[26:],
        "refuse",
        "BMP header declares 2x the rows",
    )
    png16 = png_bytes(gray12)
    add(
        "png16_ihdr_double_height.png",
        png_lying_height(png16),
        "refuse",
        "16-bit PNG, IHDR declares 2x the rows",
    )
    huge = dicom_dataset(gray12)
    huge.Rows, huge.Columns = 65535, 65535
    add("dicom_huge_rows.dcm", dicom_bytes(huge), "refuse", "Rows/Columns 65535 with 256x256 data")
    rows_lie = dicom_dataset(gray12)
    rows_lie.Rows = 2 * h
    add(
        "dicom_rows_double.dcm", dicom_bytes(rows_lie), "refuse", "Rows declares 2x the native data"
    )
    no_pixels = dicom_dataset(gray12)
    del no_pixels.PixelData
    add("dicom_no_pixel_data.dcm", dicom_bytes(no_pixels), "refuse", "no PixelData element")
    dcm = dicom_bytes(dicom_dataset(gray12))
    add("dicom_cut_in_header.dcm", dcm[:200], "refuse", "file cut inside the header")

    # unsupported formats and non-files
    for fmt, ext in (("GIF", ".gif"), ("WEBP", ".webp"), ("JPEG2000", ".jp2"), ("GIF", ".png")):
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, fmt)
        add(f"format_{fmt.lower()}{ext}", buf.getvalue(), "refuse", f"{fmt} content")
    os.symlink(dest / "does_not_exist.png", dest / "dangling_link.png")
    add("dangling_link.png", None, "refuse", "symlink to a missing file")
    os.mkfifo(dest / "fifo.png")
    add("fifo.png", None, "refuse", "named pipe (reading it would block)")
    (dest / "folder.png").mkdir()
    add("folder.png", None, "refuse", "a folder named like an image")

    # degenerate sizes, empty and random content
    add("one_pixel.png", png_bytes(np.array([[128]], np.uint8)), "any", "1x1 pixel")
    add(
        "one_by_100000.png",
        png_bytes((np.arange(100_000) % 256).astype(np.uint8)[None, :]),
        "any",
        "1x100000",
    )
    add(
        "100000_by_one.png",
        png_bytes((np.arange(100_000) % 256).astype(np.uint8)[:, None]),
        "any",
        "100000x1",
    )
    add("zero_byte.png", b"", "refuse", "0 bytes")
    add("zero_byte.dcm", b"", "refuse", "0 bytes")
    add("empty_png_signature.png", PNG_SIGNATURE, "refuse", "PNG signature and nothing else")
    rng = np.random.default_rng(14)
    add(
        "random.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "refuse", "random bytes"
    )
    add(
        "random.dcm", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "refuse", "random bytes"
    )
    add(
        "random_with_dicm.dcm",
        b"\x00" * 128 + b"DICM" + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "refuse",
        "DICM marker then random bytes",
    )
    add(
        "png_signature_random.png",
        PNG_SIGNATURE + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "refuse",
        "PNG signature then random bytes",
    )
    add("huge_dims.png", _png_header_only(100_000, 100_000), "refuse", "IHDR 100000x100000")
    add(
        "huge_dims_under_pixel_limit_rgba16.png",
        _png_header_only(7_000, 8_000, bit_depth=16, color=6),
        "refuse",
        "56 MP RGBA 16-bit declared with token data (limit on decoded bytes)",
    )
    add("jpeg_huge_dims.jpg", jpeg_with_size(gray_jpeg, 65000, 65000), "refuse", "SOF 65000x65000")
    add(
        "jpeg_desynchronised.jpeg",
        desynchronised_jpeg(jpeg),
        "refuse",
        "one bit flipped in the scan: libjpeg desynchronises, fills blocks and only warns",
    )
    add(
        "dicom_zeroed_band.dcm",
        _dicom_zeroed_band(gray12),
        "refuse",
        "native DICOM (no checksum) with 40 rows of pixel data zeroed",
    )
    return cases


def desynchronised_jpeg(jpeg: bytes) -> bytes:
    """The first one-bit flip inside the scan that leaves the scan length intact (the truncation
    oracle sees nothing) but makes libjpeg-turbo warn about corrupt data."""
    import simplejpeg

    for offset in range(len(jpeg) // 3, len(jpeg) - 16, 37):
        flipped = bytearray(jpeg)
        flipped[offset] ^= 0x04
        if _jpeg_shortfall(bytes(flipped)) is not None:
            continue
        try:
            simplejpeg.decode_jpeg(bytes(flipped), colorspace="GRAY", strict=True)
        except ValueError as exc:
            if str(exc).startswith("Corrupt JPEG data"):
                return bytes(flipped)
    raise AssertionError("no desynchronising flip found")


def _dicom_zeroed_band(gray12: np.ndarray) -> bytes:
    pixels = gray12.copy()
    pixels[100:140] = 0
    return dicom_bytes(dicom_dataset(pixels))


def _png_header_only(width: int, height: int, bit_depth: int = 8, color: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    return png_from_chunks(
        [(b"IHDR", ihdr), (b"IDAT", zlib.compress(b"\x00" * 64)), (b"IEND", b"")]
    )


def _dicom_jpeg_lying_rows(gray: np.ndarray, jpeg: bytes) -> bytes:
    h = gray.shape[0]
    ds = jpeg_dicom(gray, jpeg_with_size(jpeg, height=2 * h))
    ds.Rows = 2 * h
    return dicom_bytes(ds)


# --------------------------------------------------------------------------- seeded mutants


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random structural or byte-level mutation; returns (what was done, mutated bytes)."""
    buf = bytearray(data)
    n = len(buf)
    op = rng.integers(0, 9)
    if op == 0:
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(0, n))
            buf[i] ^= 1 << int(rng.integers(0, 8))
        return "bitflip", bytes(buf)
    if op == 1:
        for _ in range(int(rng.integers(1, 5))):
            i = int(rng.integers(0, n))
            buf[i] = int(rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE]))
        return "interesting-byte", bytes(buf)
    if op == 2:
        cut = int(rng.integers(1, n))
        return f"truncate@{cut}", bytes(buf[:cut])
    if op == 3:
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 257))
        return f"delete{k}@{i}", bytes(buf[:i] + buf[i + k :])
    if op == 4:
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 257))
        return f"insert{k}@{i}", bytes(buf[:i]) + rng.integers(
            0, 256, k, dtype=np.uint8
        ).tobytes() + bytes(buf[i:])
    if op == 5:
        i = int(rng.integers(0, max(1, min(n, 512))))  # headers live near the start
        buf[i : i + 2] = struct.pack(">H", int(rng.choice([0, 1, 2, 255, 256, 4096, 32767, 65535])))
        return f"header-u16@{i}", bytes(buf[:n])
    if op == 6:
        i, k = int(rng.integers(0, n)), int(rng.integers(1, 4097))
        j = int(rng.integers(0, n))
        return f"copy{k}@{i}->{j}", bytes(buf[:j] + buf[i : i + k] + buf[j:])
    if op == 7 and data.startswith(PNG_SIGNATURE):
        return f"png-height-x{(f := int(rng.integers(2, 5)))}", png_lying_height(data, f)
    if op == 7 and data.startswith(b"\xff\xd8"):
        sof = jpeg_sof_offset(data)
        if sof is not None:
            h0 = struct.unpack(">H", data[sof + 5 : sof + 7])[0]
            return "jpeg-height-lie", jpeg_with_size(
                data, height=max(1, h0 * int(rng.integers(2, 9)) // 2)
            )
    if op == 8 or op == 7:
        cut = int(rng.integers(n // 4, n))
        tail = b"\xff\xd9" if data.startswith(b"\xff\xd8") else data[-12:]
        return f"cut@{cut}+tail", bytes(buf[:cut]) + tail
    return "identity", bytes(buf)


def fuzz_mutants(
    originals: dict[str, bytes], count: int, seed: int
) -> Iterator[tuple[str, str, bytes]]:
    """(original's name, mutant's name, mutant) ``count`` times, cycling over the originals;
    the same seed gives the same mutants."""
    rng = np.random.default_rng(seed)
    names = sorted(originals)
    for i in range(count):
        source = names[i % len(names)]
        what, data = mutate(originals[source], rng)
        ext = Path(source).suffix
        yield source, f"{i:04d}_{Path(source).stem}_{what}{ext}", data


def flat_lines(data: bytes) -> int | None:
    """Flat rows or columns (whichever are more) of a lenient decode (Pillow, or pydicom for
    DICOM), or ``None`` when not even a lenient decoder reads the file."""
    try:
        if len(data) > 132 and data[128:132] == b"DICM":
            pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
        else:
            pixels = gray_of(data)
    except Exception:  # noqa: BLE001 - the oracle has no opinion on what no decoder reads
        return None
    if pixels.ndim != 2:
        return None
    rows = int((pixels.min(axis=1) == pixels.max(axis=1)).sum())
    cols = int((pixels.min(axis=0) == pixels.max(axis=0)).sum())
    return max(rows, cols)


# --------------------------------------------------------------------------- truncation oracle


def shortfall(data: bytes) -> str | None:
    """Why the pixel data is shorter than the header claims, or ``None`` when it is not (or unknown).

    This is the decode "with truncation refused" that the loader's output is compared with.
    """
    try:
        if data.startswith(PNG_SIGNATURE):
            return _png_shortfall(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_shortfall(data)
        if len(data) > 132 and data[128:132] == b"DICM":
            return _dicom_shortfall(data)
    except Exception:  # noqa: BLE001 - a file the oracle cannot parse is judged by the loader alone
        return None
    return None


def _png_shortfall(data: bytes) -> str | None:
    chunks = png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR":
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1][:13])
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color)
    if channels is None:
        return None
    if interlace:
        passes = [
            ((height - y0 + dy - 1) // dy, (width - x0 + dx - 1) // dx)
            for x0, y0, dx, dy in (
                (0, 0, 8, 8),
                (4, 0, 8, 8),
                (0, 4, 4, 8),
                (2, 0, 4, 4),
                (0, 2, 2, 4),
                (1, 0, 2, 2),
                (0, 1, 1, 2),
            )
        ]
    else:
        passes = [(height, width)]
    expected = sum(r * (1 + (c * channels * depth + 7) // 8) for r, c in passes if r and c)
    stream = zlib.decompressobj()
    got = 0
    for kind, payload in chunks:
        if kind == b"IDAT":
            got += len(stream.decompress(payload, expected + 1 - got)) if got <= expected else 0
    return None if got >= expected else f"PNG zlib data holds {got:,} of {expected:,} bytes"


def _jpeg_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(image)


def _jpeg_shortfall(data: bytes) -> str | None:
    """libjpeg fills missing entropy-coded data with zeros and only warns; detect that by
    putting junk where each scan's data ends: a complete scan ignores trailing junk, a short
    one decodes it into the missing blocks and changes."""
    spliced = _jpeg_with_scan_junk(data)
    if spliced is None:
        return None
    try:
        first = _jpeg_decode(data)
        second = _jpeg_decode(spliced)
    except Exception:  # noqa: BLE001 - not decodable at all: not a padding case
        return None
    if first.shape != second.shape or not np.array_equal(first, second):
        return "JPEG scan data ends before the rows its frame header declares"
    return None


def _jpeg_with_scan_junk(data: bytes) -> bytes | None:
    junk = bytes(range(1, 255)) * 4
    out, pos, found = bytearray(), 2, False
    out += data[:2]
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        segment_end = pos + 2 + length
        out += data[pos:segment_end]
        pos = segment_end
        if marker == 0xDA:
            end = pos
            while end + 1 < len(data) and not (
                data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))
            ):
                end += 1
            out += data[pos:end] + junk
            pos, found = end, True
    out += data[pos:]
    return bytes(out) if found else None


def _dicom_shortfall(data: bytes) -> str | None:
    ds = pydicom.dcmread(io.BytesIO(data))
    if "PixelData" not in ds:
        return None
    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_compressed:
        needed = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1))
            * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.BitsAllocated)
            + 7
        ) // 8
        have = len(ds.PixelData)
        return (
            None
            if have >= needed
            else f"DICOM native pixel data holds {have:,} of {needed:,} bytes"
        )
    if syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"):
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        if not frame.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return "DICOM JPEG frame has no end-of-image marker"
        return _jpeg_shortfall(frame)
    return None


# --------------------------------------------------------------------------- isolated classification


def _worker(conn, loader_path: str, error_path: str) -> None:
    module, _, attr = loader_path.partition(":")
    loader = getattr(importlib.import_module(module), attr)
    emod, _, eattr = error_path.partition(":")
    project_error = getattr(importlib.import_module(emod), eattr)
    conn.send(("ready", ""))
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            loader(job)
            conn.send(("accepted", ""))
        except project_error as exc:
            conn.send(("refused", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - classifying every other outcome is the point
            conn.send(("other", "".join(traceback.format_exception_only(type(exc), exc)).strip()))


class IsolatedLoader:
    """Runs ``loader(path)`` in a worker process with a per-file timeout.

    A worker that does not answer in time is killed and a fresh one started, so one hanging
    file is counted as a hang and the rest of the run goes on. The timeout counts only the
    loading: a worker's start (an interpreter and its imports, slow on a busy machine) is
    awaited until it says it is ready.
    """

    START_TIMEOUT = 300.0

    def __init__(
        self,
        loader: str = "cxr_core.data.imaging:load_image",
        error: str = "cxr_core.errors:CXRError",
        timeout: float = 20.0,
    ) -> None:
        self.loader, self.error, self.timeout = loader, error, timeout
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(
            target=_worker, args=(child, self.loader, self.error), daemon=True
        )
        # A spawned child re-runs the parent's __main__; inside a test session that may be a
        # Streamlit page script left there by AppTest, so the child starts from a bare one.
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            self._proc.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
        self._conn = parent
        if not parent.poll(self.START_TIMEOUT) or parent.recv() != ("ready", ""):
            raise RuntimeError(f"the loader worker did not start in {self.START_TIMEOUT:.0f} s")

    def run(self, path: Path) -> tuple[str, str]:
        if self._proc is None or not self._proc.is_alive():
            self._start()
        self._conn.send(str(path))
        if self._conn.poll(self.timeout):
            try:
                return self._conn.recv()
            except EOFError:
                self.close()
                return "other", "worker process died"
        self._proc.kill()
        self._proc.join()
        self._proc = None
        return "hang", f"no answer within {self.timeout:.0f} s"

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._conn.send(None)
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def classify(loader: IsolatedLoader, path: Path) -> tuple[str, str]:
    """Outcome of loading ``path``, with ``accepted`` turned into ``padded`` when the oracle objects."""
    outcome, detail = loader.run(path)
    if outcome == "accepted" and path.is_file() and not path.is_symlink():
        reason = shortfall(path.read_bytes())
        if reason:
            return "padded", reason
    return outcome, detail


def run_crafted(loader: IsolatedLoader, cases: list[Case]) -> list[tuple[Case, str, str]]:
    return [(case, *classify(loader, case.path)) for case in cases]


def run_fuzz(
    loader: IsolatedLoader, originals: dict[str, bytes], count: int, seed: int, workdir: Path
) -> list[tuple[str, str, str]]:
    """Write each mutant to ``workdir`` (one at a time) and classify it (``corrupt`` included)."""
    workdir.mkdir(parents=True, exist_ok=True)
    baseline = {name: flat_lines(data) for name, data in originals.items()}
    results = []
    for source, name, data in fuzz_mutants(originals, count, seed):
        path = workdir / name
        path.write_bytes(data)
        outcome, detail = classify(loader, path)
        if outcome == "accepted":
            flat = flat_lines(data)
            if flat is not None and flat - (baseline[source] or 0) >= CORRUPT_FLAT_ROWS:
                outcome, detail = (
                    "corrupt",
                    f"{flat} flat rows/columns, original {baseline[source]}",
                )
        results.append((name, outcome, detail))
        path.unlink()
    return results


def tally(outcomes: Iterable[str]) -> dict[str, int]:
    counts = Counter(outcomes)
    return {key: counts.get(key, 0) for key in OUTCOMES}


def fuzz_originals(sources: dict[str, bytes]) -> dict[str, bytes]:
    """Real PNG and JPEG radiographs, other encodings of one and DICOMs built from it."""
    return {**sources, **derived_rasters(sources), **real_dicoms(sources)}
