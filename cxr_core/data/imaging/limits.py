"""Bounds on what may be decoded, checked before any decoder runs, and reading a file's bytes.

A hostile or broken upload must be refused cheaply: the byte count before reading, the pixel
count from the header before decoding, and the decoded size (pixels x channels x bytes per
sample) before the decoder allocates it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cxr_core.errors import ImageLoadError


@dataclass(frozen=True)
class ImageLimits:
    """Upper bounds checked before decoding, so a decompression bomb is refused cheaply.

    ``max_decoded_bytes`` bounds what the decoder itself must hold (pixels x channels x bytes
    per sample): a pixel limit alone lets a 16-bit RGBA file decode to 8 bytes per pixel. The
    default admits an 8-bit RGBA image at the full pixel limit (240 MB).
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 60_000_000
    max_decoded_bytes: int = 256 * 1024 * 1024


DEFAULT_LIMITS = ImageLimits()


def read_file(path: Path, label: str, limits: ImageLimits) -> bytes:
    try:
        info = path.stat()
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise ImageLoadError(
                f"{label}: is a symbolic link to {os.readlink(path)}, which does not exist (a dangling "
                "link). Fix the link or copy the image itself."
            ) from exc
        raise ImageLoadError(
            f"{label}: file not found. Check the path or re-upload the image."
        ) from exc
    except OSError as exc:
        raise ImageLoadError(f"{label}: cannot be accessed ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageLoadError(f"{label}: is a folder, not an image file.")
    if not stat.S_ISREG(info.st_mode):
        # Opening a named pipe or a device would block or read without end.
        raise ImageLoadError(
            f"{label}: is a {_file_kind(info.st_mode)}, not a regular file; only image files can be read."
        )
    check_byte_count(info.st_size, label, limits)
    try:
        with path.open("rb") as handle:
            data = handle.read(limits.max_bytes + 1)  # the file may have grown since stat()
    except OSError as exc:
        raise ImageLoadError(f"{label}: cannot be read ({exc.strerror or exc}).") from exc
    check_byte_count(len(data), label, limits)
    return data


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "named pipe (FIFO)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def check_byte_count(size: int, label: str, limits: ImageLimits) -> None:
    if size == 0:
        raise ImageLoadError(
            f"{label}: the file is empty (0 bytes); the export or upload did not complete."
        )
    if size > limits.max_bytes:
        raise ImageLoadError(
            f"{label}: the file is {_size_text(size)}, over the {_size_text(limits.max_bytes)} limit. "
            "Export a smaller image or raise ImageLimits.max_bytes."
        )


def check_pixel_count(width: int, height: int, label: str, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageLoadError(
            f"{label}: the image is {width}x{height} = {width * height:,} pixels, over the "
            f"{limits.max_pixels:,} pixel limit (possible decompression bomb). "
            "Downscale the image or raise ImageLimits.max_pixels."
        )


def check_decoded_bytes(
    width: int,
    height: int,
    channels: int,
    sample_bytes: int,
    what: str,
    label: str,
    limits: ImageLimits,
) -> None:
    decoded = width * height * channels * sample_bytes
    if decoded > limits.max_decoded_bytes:
        raise ImageLoadError(
            f"{label}: decoding the {width}x{height} {what} image would take {_size_text(decoded)} "
            f"({channels} channel(s) x {sample_bytes} byte(s) per sample), over the "
            f"{_size_text(limits.max_decoded_bytes)} limit on decoded data. Save it as grayscale, "
            "downscale it, or raise ImageLimits.max_decoded_bytes."
        )


def _size_text(size: int) -> str:
    return f"{size:,} bytes" if size < 1024 * 1024 else f"{size / (1024 * 1024):.1f} MB"
