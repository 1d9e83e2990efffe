"""Memory a finished phase freed goes back to the system, so a long command's resident size is
its largest phase, not the sum of every phase's leftovers."""

from __future__ import annotations

import pytest

from cxr_core.utils import memory


@pytest.mark.skipif(memory._malloc_trim() is None, reason="glibc's malloc_trim is not available")
def test_freed_heap_memory_is_returned():
    # ~200 MB in malloc's heap (each below mmap's threshold), then one block above them: the
    # heap's top stays in use, so freeing the others shrinks nothing by itself
    kept = [bytes(4000) for _ in range(50_000)]
    last = bytes(4000)
    del kept
    before = memory.resident_mb()
    memory.release_unused_memory("a test")
    assert before - memory.resident_mb() > 100
    assert last
