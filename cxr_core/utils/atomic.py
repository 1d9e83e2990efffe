"""Atomic file writes: readers only ever see a complete old file or a complete new one.

Checkpoints, evaluation reports, threshold sets and manifests are read by the dashboard while
training or another session may be writing them; a crash or a full disk must never leave a
torn file that looks valid. Everything that persists user-visible results writes through here.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

# ``.<name>.<pid>-<8 hex>.tmp``: what write_atomically names its temporary files. A process
# killed mid-write (SIGKILL, power loss) leaves one behind; nothing else would ever remove it.
TEMP_NAME = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp$")
STALE_AFTER_S = 3600.0  # no write takes an hour, so an older temporary file is abandoned


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def write_atomically(
    path: str | Path, write: Callable[[Path], None], *, sweep: bool = True
) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename over ``path``.

    Readers (the dashboard, a resumed run) therefore only ever see a complete old or new file.
    ``sweep=False`` skips looking for abandoned temporary files in the folder, for writers of
    many files into one folder (a million lung masks) that sweep it once themselves.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sweep:
        remove_stale_temp_files(path.parent)
    # Not mkstemp: its 0600 mode would make results unreadable to the dashboard's user.
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # some writers (safetensors) create files 0600
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem allows opening a directory
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def remove_stale_temp_files(
    folder: str | Path, *, older_than_s: float = STALE_AFTER_S
) -> list[Path]:
    """Delete temporary files of :func:`write_atomically` left in ``folder`` by killed writers.

    Only names of the writer's pattern older than ``older_than_s`` are touched, so a write in
    progress in another process is never disturbed. Returns the files removed.
    """
    cutoff = time.time() - older_than_s
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not TEMP_NAME.match(entry.name):
            continue
        try:
            if (
                entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < cutoff
            ):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue  # removed meanwhile by another writer, or not ours to remove
    if removed:
        logger.info("removed %d abandoned temporary file(s) in %s", len(removed), folder)
    return removed


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
