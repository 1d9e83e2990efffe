"""Truncation checks for PNG and JPEG files, whose decoders fill missing rows instead of failing.

zlib stops cleanly at the end of a complete but short stream and Pillow leaves the undecoded
rows black; libjpeg fills a scan that runs out with zeros and only warns. Each check here
measures what the file holds against what its header declares.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


_PNG_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def png_shortfall(data: bytes) -> str | None:
    """How much image data a PNG lacks, or ``None`` when its zlib stream holds every row.

    zlib stops cleanly at the end of a complete but short stream, and Pillow then leaves the
    undecoded rows black; only counting the decompressed bytes shows it. Decompression is
    streamed in 1 MB steps so the check costs no memory.
    """
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    channels = PNG_CHANNELS.get(color)
    if channels is None:
        return None
    passes = (
        [
            ((height - y0 + dy - 1) // dy, (width - x0 + dx - 1) // dx)
            for x0, y0, dx, dy in _PNG_ADAM7
        ]
        if interlace
        else [(height, width)]
    )
    expected = sum(
        rows * (1 + (cols * channels * depth + 7) // 8) for rows, cols in passes if rows and cols
    )
    stream, got, pos, view = zlib.decompressobj(), 0, 8, memoryview(data)
    while pos + 8 <= len(data) and got < expected and not stream.eof:
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            pending = view[pos + 8 : pos + 8 + length]
            while pending and got < expected and not stream.eof:
                got += len(stream.decompress(pending, 1 << 20))
                pending = stream.unconsumed_tail
        pos += 12 + length
    if got >= expected:
        return None
    if not interlace:
        row_bytes = 1 + (width * channels * depth + 7) // 8
        return (
            f"its header (IHDR) declares {height:,} rows but the image data holds {got // row_bytes:,} "
            f"({got:,} of {expected:,} bytes)"
        )
    return f"its interlaced image data holds {got:,} of the {expected:,} bytes its header (IHDR) declares"


def jpeg_shortfall(data: bytes, reference: np.ndarray | None = None) -> str | None:
    """Whether a JPEG's scans end before the rows its frame header declares.

    libjpeg decodes a scan that runs out of data (cut file, EOI or another marker too early,
    SOF claiming more rows) by filling the remaining blocks with zeros, with only a warning
    that Pillow does not expose. Junk placed where each scan's data ends tells the cases
    apart: a complete scan never reads it, a short scan decodes it into the missing blocks.
    ``reference`` is the file's own decode when the caller has it (as ``jpeg_pixels`` makes
    it); the comparison is at full size, because a scan that runs out within the last
    blocks' high frequencies changes nothing a scaled-down decode shows.
    """
    spliced = _jpeg_with_scan_junk(data)
    if spliced is None:
        return None
    if reference is None:
        reference = jpeg_pixels(data)
    try:
        probe = jpeg_pixels(spliced)
    except Exception:  # noqa: BLE001 - junk was decoded into the image: its scan was short
        probe = None
    if probe is not None and np.array_equal(reference, probe):
        return None
    return "its scan data ends before all the rows its frame header (SOF) declares have been coded"


_SCAN_JUNK = bytes(range(1, 255)) * 4  # no 0xFF, so the junk cannot form a marker


def _jpeg_with_scan_junk(data: bytes) -> bytes | None:
    """``data`` with junk inserted after each scan's entropy-coded data; ``None`` if unparsable."""
    out, pos, scans = bytearray(data[:2]), 2, 0
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            out.append(0xFF)
            pos += 1
            continue
        if marker == 0xD9:
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: markers without a length
            out += data[pos : pos + 2]
            pos += 2
            continue
        segment_end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        out += data[pos:segment_end]
        pos = segment_end
        if marker == 0xDA:
            end = data.find(b"\xff", pos)
            while (
                end != -1
                and end + 1 < len(data)
                and (data[end + 1] == 0x00 or 0xD0 <= data[end + 1] <= 0xD7)
            ):
                end = data.find(b"\xff", end + 2)
            end = len(data) if end == -1 else end
            out += data[pos:end] + _SCAN_JUNK
            pos, scans = end, scans + 1
    if not scans:
        return None
    out += data[pos:]
    return bytes(out)


def jpeg_pixels(data: bytes) -> np.ndarray:
    """Decode as ``load_pil`` does (RGB straight to luma), for comparison with its result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            if image.mode == "RGB":
                image.draft("L", None)
            image.load()
            return np.asarray(image)
