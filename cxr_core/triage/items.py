"""What a worklist lists: films from a folder, an uploaded batch or a PACS query, read on demand.

An item knows how to fetch its bytes (``read``) but has not read them yet: a worklist of 500
PACS films shows its first scored rows while the rest are still being fetched. ``alias`` is a
stable name for the film's content where one exists (a DICOM SOP Instance UID), so a rescored
worklist can find a film's cached score without fetching it again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cxr_core.data.formats.files import list_image_files

SOURCE_FOLDER = "folder"
SOURCE_UPLOAD = "upload"
SOURCE_PACS = "pacs"


@dataclass(frozen=True)
class WorklistItem:
    """One film of a worklist: a stable ``key``, a display ``name`` and how to read its bytes."""

    key: str
    name: str
    read: Callable[[], bytes] = field(repr=False, compare=False)
    source: str = SOURCE_FOLDER
    alias: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_uid: str = ""


def folder_items(folder: str | os.PathLike[str]) -> list[WorklistItem]:
    """Every image file under ``folder`` (recursively; extensionless DICOM exports included).

    Raises ``ImageLoadError`` for a folder that does not exist or holds no images.
    """
    root = Path(folder)
    paths = list_image_files([root]).images
    return [
        WorklistItem(
            key=str(path),
            name=str(path.relative_to(root)) if path.is_relative_to(root) else path.name,
            read=path.read_bytes,
        )
        for path in paths
        if not path.is_dir()
    ]


def upload_items(files: Iterable[tuple[str, Callable[[], bytes]]]) -> list[WorklistItem]:
    """An uploaded batch: (file name, function returning its bytes) pairs.

    The key is the content hash, so the same file uploaded twice is one film. Each file is read
    once here, to hash it, and again only when scored: the items keep the reader, not a copy of
    the bytes (the upload widget holds them already).
    """
    items: dict[str, WorklistItem] = {}
    for name, read in files:
        key = hashlib.sha256(read()).hexdigest()
        items.setdefault(key, WorklistItem(key=key, name=name, read=read, source=SOURCE_UPLOAD))
    return list(items.values())


def item_keys(items: Sequence[WorklistItem]) -> tuple[str, ...]:
    """The keys of a worklist, in order: its identity for caching the job that scores it."""
    return tuple(item.key for item in items)
