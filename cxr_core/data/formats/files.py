"""File-system helpers shared by the dataset adapters.

Kept apart from the adapters so that every format applies the same rules for what counts as an
image, which files are ignored, how a patient is recognised from a file name, and what happens
when a label file names an image that is not on disk.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cxr_core.data.imaging import (
    SNIFF_BYTES,
    SUPPORTED_KINDS,
    UNSUPPORTED_IMAGE_EXTENSIONS,
    UNSUPPORTED_IMAGE_KINDS,
    sniff_kind,
)
from cxr_core.data.imaging import SUPPORTED_EXTENSIONS as IMAGE_EXTENSIONS
from cxr_core.errors import DatasetError, ImageLoadError

Missing = Literal["error", "drop"]

# File-name conventions that carry the patient, so images of one patient never straddle splits.
_PATIENT_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(
        r"^(person\d+)_", re.IGNORECASE
    ),  # Kermany: person123_bacteria_456, person1_virus_2_3
    # Kermany normals: IM-<patient>-<study>[-<image>]. The trailing numbers count a patient's
    # studies and images (IM-0467-0001-0001 and IM-0467-0001-0002 are two views of one study),
    # so only IM-<patient> names the patient. NORMAL2- names are a second series whose numbers
    # restart: NORMAL2-IM-0467 is not IM-0467 and keeps its prefix.
    re.compile(r"^((?:NORMAL2-)?IM-\d+)(?:-\d+)+$", re.IGNORECASE),
    re.compile(
        r"^(\d{8})_\d{3}$"
    ),  # NIH ChestX-ray14 file names reused by other sets: 00001280_004
)

_EXISTENCE_PROGRESS_FROM = 20_000


def is_hidden(name: str) -> bool:
    """Dot-files and OS/zip debris (``.DS_Store``, ``__MACOSX``) are never data."""
    return name.startswith(".") or name.startswith("__")


def is_image_file(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def patient_id_from_filename(stem: str) -> str:
    """Patient from a file stem by the known naming conventions; otherwise the stem itself.

    Falling back to the stem treats every image as its own patient, which is the only safe
    assumption when the name carries no patient (it cannot create leakage that is not there).
    """
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def first_items(items: Iterable[object], total: int | None = None, limit: int = 5) -> str:
    """``a, b, c (and 12 more)`` for error messages that must name the offending rows."""
    items = list(items)
    total = len(items) if total is None else total
    shown = ", ".join(str(i) for i in items[:limit])
    more = total - min(limit, len(items))
    return shown + (f" (and {more} more)" if more > 0 else "")


def csv_rows(frame: pd.DataFrame, mask: pd.Series | np.ndarray, limit: int = 5) -> str:
    """Spreadsheet row numbers (header = row 1) plus image ids of the rows selected by ``mask``."""
    mask = np.asarray(mask, dtype=bool)
    positions = np.flatnonzero(mask)
    ids = frame["image_id"].to_numpy()[positions] if "image_id" in frame else [""] * len(positions)
    items = [
        f"row {p + 2} ({i})" if i != "" else f"row {p + 2}"
        for p, i in zip(positions[:limit], ids[:limit])
    ]
    return first_items(items, total=len(positions), limit=limit)


def existing_mask(
    paths: pd.Series | list[str], *, desc: str = "checking image files"
) -> np.ndarray:
    """Which paths exist; shows progress when there are enough to take noticeable time."""
    paths = list(paths)
    show = len(paths) >= _EXISTENCE_PROGRESS_FROM
    return np.fromiter(
        (
            os.path.isfile(p)
            for p in tqdm(paths, desc=desc, unit="file", disable=not show, leave=False)
        ),
        dtype=bool,
        count=len(paths),
    )


def apply_missing_policy(
    frame: pd.DataFrame,
    missing: Missing,
    *,
    where: str,
    hint: str,
    exists: np.ndarray | None = None,
) -> tuple[pd.DataFrame, int]:
    """Enforce the missing-image policy on ``frame['path']``; returns the kept rows and how many were dropped.

    ``error`` (the default everywhere) refuses to build a manifest that would fail halfway through
    training; ``drop`` is for the common case of a full label CSV next to a downloaded subset
    of images, and the count dropped is reported so the shrinkage is never silent. ``exists``
    spares the disk when the caller already indexed the image folders.
    """
    if missing not in ("error", "drop"):
        raise DatasetError(f"missing must be 'error' or 'drop', not {missing!r}")
    exists = existing_mask(frame["path"]) if exists is None else np.asarray(exists, dtype=bool)
    n_missing = int((~exists).sum())
    if n_missing == 0:
        return frame, 0
    if missing == "error":
        shown = first_items(frame.loc[~exists, "path"], total=n_missing)
        raise DatasetError(
            f"{n_missing} of {len(frame)} images listed in {where} are not on disk: {shown}. "
            f"Check the image folder, or {hint} to use only the images that are present."
        )
    kept = frame.loc[exists].reset_index(drop=True)
    if kept.empty:
        raise DatasetError(
            f"none of the {len(frame)} images listed in {where} is on disk; check the image folder"
        )
    return kept, n_missing


def walk_files(folder: Path) -> Iterator[Path]:
    """Every non-hidden file under ``folder``, in a stable order (folders and names sorted).

    The one directory walk of the dataset adapters: hidden entries (``.DS_Store``, ``._x.png``
    from macOS copies) are never data, and a sorted walk makes manifests reproducible.
    """
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for name in sorted(filenames):
            if not is_hidden(name):
                yield Path(dirpath, name)


@dataclass
class ImageListing:
    """The files of a prediction run: those that get a row, and the others counted by kind."""

    images: list[Path] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """``3 not images: 2 text, 1 zip`` (empty when every file got a row)."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped.items(), key=_by_count))
        return f"{total} not image{'s' if total != 1 else ''}: {kinds}"


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def list_image_files(inputs: Iterable[str | os.PathLike[str]]) -> ImageListing:
    """Files as given, plus every image found by content (or named like one) in folders.

    Inside folders a file is an image by its first bytes (:func:`sniff_kind`: DICOM preamble or
    ``DICM``-less DICOM start, PNG/JPEG/TIFF/BMP/JPEG 2000/GIF/WebP... signatures), so the
    extensionless files PACS and DICOMDIR exports write get their row; a file named like an
    image whatever it holds, and an entry that is not a regular file but is named like one (a
    dangling link, a pipe, a folder ``x.png``), get a row too, so that ``load_image`` says why
    it cannot be read. Everything else is counted by kind in :attr:`ImageListing.skipped`.
    Raises ``ImageLoadError`` for a path that does not exist or a folder without images,
    because both are almost always a typo in the command.
    """
    listing = ImageListing()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = ImageListing()
            for entry in _folder_entries(path):
                kind = _entry_kind(entry)
                if kind is None:
                    found.images.append(entry)
                else:
                    found.skipped[kind] += 1
            if not found.images:
                skipped = f" ({found.summary()})" if found.skipped else ""
                raise ImageLoadError(
                    f"{path}: the folder contains no images{skipped}. Supported formats: PNG, JPEG, "
                    "BMP, TIFF and DICOM (with or without a file extension)."
                )
            listing.images.extend(sorted(found.images))
            listing.skipped.update(found.skipped)
        elif path.exists() or path.is_symlink():  # a dangling link gets its row like any other file
            listing.images.append(path)
        else:
            raise ImageLoadError(f"{path}: no such file or folder.")
    return listing


def _folder_entries(folder: Path) -> Iterator[Path]:
    """Every file under ``folder``, every sub-folder named like an image (which gets a row) and
    every hidden sub-folder (counted as hidden, not walked: ``.git``, ``__MACOSX``)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in dirnames:
            if _named_like_image(name) or is_hidden(name):
                yield Path(dirpath, name)
        dirnames[:] = [d for d in dirnames if not is_hidden(d)]
        for name in sorted(filenames):
            yield Path(dirpath, name)


def _named_like_image(name: str) -> bool:
    suffix = Path(name).suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in UNSUPPORTED_IMAGE_EXTENSIONS


def _entry_kind(path: Path) -> str | None:
    """``None`` for an entry that gets a row; otherwise the kind it is counted under."""
    if is_hidden(path.name):
        return "hidden"
    named = _named_like_image(path.name)
    try:
        mode = (
            path.lstat().st_mode if path.is_symlink() and not path.exists() else path.stat().st_mode
        )
    except OSError:
        return None if named else "unreadable"
    if not stat.S_ISREG(mode):
        # Opening a pipe or device would block; only its name can make it an image.
        return None if named else "special files"
    try:
        with path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return None if named else "unreadable"
    kind = sniff_kind(head)
    if named or kind in SUPPORTED_KINDS or kind in UNSUPPORTED_IMAGE_KINDS:
        return None
    return kind


def index_images(folders: Iterable[Path]) -> dict[str, str]:
    """File name -> absolute path for every image under ``folders`` (walked once, sorted, first wins)."""
    index: dict[str, str] = {}
    for folder in folders:
        for path in walk_files(folder):
            if is_image_file(path.name):
                index.setdefault(path.name, os.path.abspath(path))
    return index


# Compression and decoding failures pandas lets through from a label file.
# (A ValueError is not one: it is how pandas reports a value that does not fit a requested dtype,
# which the adapters turn into messages naming those rows.)
_READ_FAILURES = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_label_csv(
    path: Path, what: str, *, header_only: bool = False, **read_csv_args: object
) -> pd.DataFrame:
    """``pd.read_csv`` whose every failure is a DatasetError naming the file and, where known, the row.

    Covers what exported label files really contain: bytes that are not UTF-8 (a spreadsheet
    saved as Latin-1), ragged rows (an unquoted comma in a field), corrupt or truncated
    ``.gz``/``.bz2``/``.xz``/``.zip`` files, and a header without rows. ``what`` names the file
    in messages ("NIH label file"). Rows are numbered as in a spreadsheet (header = row 1).
    """
    try:
        frame = pd.read_csv(path, nrows=0 if header_only else None, **read_csv_args)
    except UnicodeDecodeError as exc:
        raise DatasetError(_encoding_message(path, what, exc)) from None
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{what} {path} is empty (no header row); export it again") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if found:
            raise DatasetError(
                f"{what} {path}: row {found.group(2)} has {found.group(3)} fields but the header has "
                f"{found.group(1)}; a value probably contains an unquoted comma. Quote it or remove the row."
            ) from None
        raise DatasetError(f"{what} {path} cannot be parsed as CSV ({exc})") from None
    except _READ_FAILURES as exc:
        raise DatasetError(
            f"{what} {path} cannot be read ({type(exc).__name__}: {exc}); if it is compressed, the archive is "
            "corrupt or truncated: download or export it again"
        ) from None
    if not header_only and frame.empty:
        raise DatasetError(f"{what} {path} has a header but no rows; it lists no images")
    return frame


def _encoding_message(path: Path, what: str, exc: UnicodeDecodeError) -> str:
    row = _first_undecodable_row(path)
    where = f"row {row}" if row is not None else f"byte {exc.start}"
    return (
        f"{what} {path}: {where} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); "
        "re-save the file as UTF-8 (in a spreadsheet: CSV UTF-8)"
    )


def _first_undecodable_row(path: Path) -> int | None:
    opener = _OPENERS.get(path.suffix.lower(), open)
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
    except (*_READ_FAILURES, UnicodeDecodeError):
        return None
    return None


def csv_header(csv: Path, what: str) -> list[str]:
    """The stripped column names of a label CSV, read without its rows; ``what`` names it in errors."""
    return [str(c).strip() for c in read_label_csv(csv, what, header_only=True).columns]
