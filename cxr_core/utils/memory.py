"""Handing freed memory back to the system between the phases of a long command.

A million-row evaluation frees hundreds of MB between reading the labels, predicting and
scoring, but glibc's malloc keeps freed heap pages and pyarrow's pool (behind pandas' string
columns) keeps its own, so the process's resident size would sum every phase's leftovers:
measured at 1M rows, reading the labels alone left 450 MB resident that the manifest no longer
used. Dask's workers trim the same way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from functools import cache

logger = logging.getLogger(__name__)


@cache
def _malloc_trim():
    """glibc's ``malloc_trim`` (None elsewhere: other allocators return memory by themselves)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and other C libraries have no malloc_trim
        return None


def resident_mb() -> float:
    """This process's resident memory (MB) now; 0.0 where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            line = next(line for line in handle if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def release_unused_memory(phase: str) -> None:
    """Return memory freed by the phase that just ended (named in the debug log) to the system."""
    before = resident_mb() if logger.isEnabledFor(logging.DEBUG) else 0.0
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    if logger.isEnabledFor(logging.DEBUG):
        after = resident_mb()
        logger.debug("after %s: %.0f MB resident, %.0f MB returned", phase, after, before - after)
