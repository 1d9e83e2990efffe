"""Entry point the sharded-run tests start under ``torchrun``: ``cxr`` with one injected fault.

``python driver.py fail-rank-1 COMMAND ARGS...`` runs ``cxr COMMAND ARGS...`` in which rank 1
raises as it starts its first chunk (``predict``) or its first chunk of a split
(``evaluate``), while rank 0 carries on into the barrier.
"""

from __future__ import annotations

import os
import sys

from cxr_core.cli.main import main
from cxr_core.errors import CXRError
from cxr_core.evaluation import chunked
from cxr_core.inference import batch_run


def _fail_on_rank_1(original):
    def write(*args, **kwargs):
        if os.environ.get("RANK") == "1":
            raise CXRError("injected failure on rank 1")
        return original(*args, **kwargs)

    return write


if __name__ == "__main__":
    mode, *argv = sys.argv[1:]
    if mode == "fail-rank-1":
        batch_run._ChunkWriter.write = _fail_on_rank_1(batch_run._ChunkWriter.write)
        chunked.predict_chunk = _fail_on_rank_1(chunked.predict_chunk)
    sys.exit(main(argv))
