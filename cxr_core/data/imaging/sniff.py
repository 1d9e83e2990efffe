"""What a file holds, judged from its first bytes: the one place image formats are recognised.

Exported radiographs are often misnamed (a PNG called ``.jpg``) or have no extension at all
(PACS and DICOMDIR exports write ``IM000001``), so a folder listing and the decoder both go by
content. :func:`sniff_kind` names the kind from the magic bytes (and for DICOM, the ``DICM``
marker after the 128-byte preamble or a preamble-less group 0002/0008 start); the folder walk
gives every image-like file a row and counts the rest by kind.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}
)
# Names of image formats that exist but are refused, so that a folder listing can give them
# a row with the reason instead of skipping them silently.
UNSUPPORTED_IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".gif", ".webp", ".jp2", ".j2k", ".jpx", ".jpf", ".heic", ".heif", ".avif", ".jxl"}
)
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ""})
HELP_FORMATS = "Supported formats: PNG, JPEG, BMP, TIFF and DICOM."
SNIFF_BYTES = 136  # enough for the DICOM preamble, its "DICM" marker and every signature below

SUPPORTED_KINDS = frozenset({"PNG", "JPEG", "TIFF", "BMP", "DICOM"})
UNSUPPORTED_IMAGE_KINDS = frozenset({"JPEG 2000", "GIF", "WebP", "HEIF/AVIF", "JPEG XL"})
SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_OTHER_SIGNATURES = (
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),  # raw codestream (.j2k)
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!", "rar"),
    (b"SQLite format 3\x00", "SQLite"),
)


def has_dicom_marker(data: bytes) -> bool:
    """The standard DICOM file start: a 128-byte preamble, then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def looks_like_raw_dicom(data: bytes) -> bool:
    """A DICOM written without preamble starts with a little-endian group 0002 or 0008 tag."""
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00") and data[3:4] == b"\x00"


def sniff_kind(head: bytes) -> str:
    """The kind of file whose first :data:`SNIFF_BYTES` bytes are ``head``.

    One of :data:`SUPPORTED_KINDS`, :data:`UNSUPPORTED_IMAGE_KINDS`, a container or document
    kind (``PDF``, ``zip``, ``gzip``...), ``text``, ``empty`` or ``unknown``.
    """
    if not head:
        return "empty"
    if has_dicom_marker(head) or looks_like_raw_dicom(head):
        return "DICOM"
    for signature, kind in SIGNATURES + _OTHER_SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1"):
        return "HEIF/AVIF"
    sample = head[:64]
    if all(32 <= b < 127 or b in (9, 10, 13) or b >= 0x80 for b in sample):
        try:
            sample.decode("utf-8")
            return "text"
        except UnicodeDecodeError:
            pass
    return "unknown"


def not_an_image_message(data: bytes, label: str) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            other = Image.open(io.BytesIO(data)).format
    except Exception:  # noqa: BLE001 - any failure just means "not an image Pillow knows"
        other = None
    if other:
        return f"{label}: is a {other} image, which is not supported. {HELP_FORMATS}"
    head = data[:64]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        kind = "text, not an image"
    else:
        for signature, fmt in SIGNATURES:
            if data.startswith(signature):
                # Pillow reports a header it cannot parse as "not identified"; the magic bytes
                # show it is a damaged file of a supported format, not a misnamed one.
                return (
                    f"{label}: starts like a {fmt} file but its header cannot be read; the file is "
                    "damaged or truncated. Re-export or re-upload it."
                )
        kind = "not a recognised image"
    return f"{label}: the content is {kind} (the file name may be wrong). {HELP_FORMATS}"
