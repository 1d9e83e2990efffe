"""Work split into chunks over processes and kept on disk, so that a run can be shared and resumed.

``cxr predict`` and ``cxr evaluate`` cut their inputs (files, or the rows of a split) into
consecutive chunks and keep each finished chunk as a file in a work folder inside the output
folder (``OUT/.cxr-work/``)::

    plan.json          what the chunks are of: a fingerprint of the inputs and settings, chunk size
    inputs.jsonl       the inputs in order (when the run lists them itself, e.g. files in folders)
    assignment.json    which process does which of the chunks still to do, for this launch
    chunk-000012.csv   a finished chunk (written atomically: it exists complete or not at all)

Under ``torchrun`` every process (rank) does its share of the chunks; rank 0 alone plans
(before a barrier) and, after a second barrier, merges the chunks in order into the files a
single process writes. The chunk size depends only on the number of inputs and the batch
size, and every chunk starts a fresh batch, so a chunk's output is the same whichever
process, launch or world size computes it. A rerun with the same fingerprint (a killed run,
or one with a different number of processes) skips the chunks that exist; a rerun with
other inputs or settings starts over. Chunks are dealt to ranks by their bytes on disk
(longest first, each to the least loaded rank), which balances decoding time better than
counts when film sizes vary.

This module needs only what the processes share, a rank, a world size and a barrier
(:class:`Ranks`); :class:`cxr_core.utils.distributed.DistContext` is one, and
:data:`SINGLE_PROCESS` stands for a run without torchrun.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cxr_core.utils.atomic import write_atomically, write_text_atomically

logger = logging.getLogger(__name__)

WORK_DIR = ".cxr-work"
PLAN_FILE = "plan.json"
INPUTS_FILE = "inputs.jsonl"
ASSIGNMENT_FILE = "assignment.json"
MAX_CHUNK = 1024  # files per chunk at most: what a killed run loses per process
CHUNKS_PER_RUN = 64  # chunks a run is cut into (when that keeps chunks at least a batch long)
PLAN_VERSION = 1


class Ranks(Protocol):
    """The processes of one run: this one's number, how many there are, and a barrier."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    def barrier(self) -> None: ...


@dataclass(frozen=True)
class _SingleProcess:
    rank: int = 0
    world_size: int = 1

    def barrier(self) -> None:
        """Nothing to wait for."""


SINGLE_PROCESS: Ranks = _SingleProcess()


def chunk_size(n_items: int, batch_size: int) -> int:
    """Items per chunk: about ``n / CHUNKS_PER_RUN``, at least one batch, at most :data:`MAX_CHUNK`."""
    return max(1, min(MAX_CHUNK, max(batch_size, math.ceil(n_items / CHUNKS_PER_RUN))))


def chunk_bounds(n_items: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each chunk, in order."""
    return [(start, min(n_items, start + size)) for start in range(0, n_items, size)]


def assign_chunks(
    chunks: Sequence[int], weights: Sequence[float], world_size: int
) -> list[list[int]]:
    """``chunks`` dealt to ``world_size`` ranks: heaviest first, each to the least loaded rank
    (ties to the lowest rank); each rank's chunks in ascending order. Deterministic."""
    loads = [(0.0, rank) for rank in range(world_size)]
    share: list[list[int]] = [[] for _ in range(world_size)]
    for chunk in sorted(chunks, key=lambda c: (-float(weights[c]), c)):
        load, rank = heapq.heappop(loads)
        share[rank].append(chunk)
        heapq.heappush(loads, (load + float(weights[chunk]), rank))
    return [sorted(s) for s in share]


def file_size(path: str) -> int:
    """Bytes of a file, 0 when it cannot be read (it still gets its row, with its error)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class Fingerprint:
    """SHA-256 of everything a run's chunks depend on, fed piece by piece."""

    def __init__(self, kind: str) -> None:
        self._hash = hashlib.sha256(f"cxr work v{PLAN_VERSION} {kind}\n".encode())

    def add(self, *values: Any) -> Fingerprint:
        for value in values:
            self._hash.update(json.dumps(value, sort_keys=True, default=str).encode() + b"\0")
        return self

    def add_file(self, path: str | os.PathLike[str]) -> Fingerprint:
        """A file by path, size and modification time (reading it would cost what the run costs)."""
        try:
            st = os.stat(path)
            return self.add(os.fspath(path), st.st_size, st.st_mtime_ns)
        except OSError:
            return self.add(os.fspath(path), None)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()[:24]


@dataclass(frozen=True)
class Plan:
    """A run's chunks and which of them this launch leaves to each rank."""

    fingerprint: str
    n_items: int
    chunk_size: int
    assignment: tuple[tuple[int, ...], ...]

    @property
    def bounds(self) -> list[tuple[int, int]]:
        return chunk_bounds(self.n_items, self.chunk_size)

    @property
    def n_chunks(self) -> int:
        return len(self.bounds)

    def chunks_of(self, rank: int) -> tuple[int, ...]:
        return self.assignment[rank]

    def items_of(self, rank: int) -> int:
        bounds = self.bounds
        return sum(bounds[c][1] - bounds[c][0] for c in self.chunks_of(rank))


class WorkDir:
    """The work folder of one output folder (see the module docstring for its files)."""

    def __init__(self, out_dir: str | os.PathLike[str], suffix: str) -> None:
        self.root = Path(out_dir) / WORK_DIR
        self.suffix = suffix

    def chunk_path(self, chunk: int) -> Path:
        return self.root / f"chunk-{chunk:06d}{self.suffix}"

    def is_done(self, chunk: int) -> bool:
        return self.chunk_path(chunk).is_file()

    def done_chunks(self) -> set[int]:
        """Chunks whose file exists (one listing, not one stat per chunk)."""
        if not self.root.is_dir():
            return set()
        prefix, done = "chunk-", set()
        for entry in os.scandir(self.root):
            name = entry.name
            if name.startswith(prefix) and name.endswith(self.suffix):
                number = name[len(prefix) : len(name) - len(self.suffix)]
                if number.isdigit():
                    done.add(int(number))
        return done

    def stored_fingerprint(self) -> str | None:
        try:
            plan = json.loads((self.root / PLAN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return plan.get("fingerprint") if isinstance(plan, dict) else None

    def prepare(
        self,
        fingerprint: str,
        n_items: int,
        size: int,
        world_size: int,
        weights: Sequence[float] | None = None,
        inputs: Iterable[Any] | None = None,
    ) -> Plan:
        """Rank 0, before the barrier: keep the chunks of an earlier launch of the same run, or
        start afresh; deal the chunks still to do to ``world_size`` ranks, by ``weights`` (each
        chunk's summed item weights; item counts without them); write ``inputs`` when given."""
        previous = self.stored_fingerprint()
        if previous is not None and previous != fingerprint:
            logger.info(
                "%s holds another run's work (other inputs or settings): starting over", self.root
            )
        if previous != fingerprint:
            self.discard()
            self.root.mkdir(parents=True, exist_ok=True)
            if inputs is not None:
                write_atomically(self.root / INPUTS_FILE, lambda tmp: _write_lines(tmp, inputs))
            plan = {
                "version": PLAN_VERSION,
                "fingerprint": fingerprint,
                "n_items": n_items,
                "chunk_size": size,
            }
            write_text_atomically(self.root / PLAN_FILE, json.dumps(plan))
        bounds = chunk_bounds(n_items, size)
        done = self.done_chunks()
        pending = [c for c in range(len(bounds)) if c not in done]
        if done:
            logger.info(
                "resuming: %d of %d chunks already done in %s",
                len(bounds) - len(pending),
                len(bounds),
                self.root,
            )
        chunk_weights = _chunk_weights(bounds, weights)
        assignment = assign_chunks(pending, chunk_weights, world_size)
        write_text_atomically(
            self.root / ASSIGNMENT_FILE,
            json.dumps(
                {"fingerprint": fingerprint, "world_size": world_size, "chunks": assignment}
            ),
        )
        return Plan(fingerprint, n_items, size, tuple(tuple(a) for a in assignment))

    def read_plan(self, world_size: int) -> Plan:
        """Every rank after the barrier: the plan rank 0 prepared for this launch."""
        plan = json.loads((self.root / PLAN_FILE).read_text(encoding="utf-8"))
        assignment = json.loads((self.root / ASSIGNMENT_FILE).read_text(encoding="utf-8"))
        if (
            assignment["world_size"] != world_size
            or assignment["fingerprint"] != plan["fingerprint"]
        ):
            raise RuntimeError(f"{self.root}: the plan was made for another launch")
        chunks = tuple(tuple(int(c) for c in share) for share in assignment["chunks"])
        return Plan(plan["fingerprint"], int(plan["n_items"]), int(plan["chunk_size"]), chunks)

    def inputs(self) -> Iterator[Any]:
        """The inputs rank 0 wrote, in order."""
        with (self.root / INPUTS_FILE).open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)

    def chunk_files(self, plan: Plan) -> list[Path]:
        """Every chunk's file in order; all must exist (after the last barrier)."""
        missing = [c for c in range(plan.n_chunks) if not self.is_done(c)]
        if missing:
            raise RuntimeError(f"{self.root}: chunk(s) {missing[:5]} were not written by any rank")
        return [self.chunk_path(c) for c in range(plan.n_chunks)]

    def discard(self) -> None:
        """Remove the work folder: the plan first, so a folder half removed is never resumed."""
        (self.root / PLAN_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _chunk_weights(bounds: list[tuple[int, int]], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [float(stop - start) for start, stop in bounds]
    # +1 per item: unreadable (0-byte) files still cost a row each.
    return [float(sum(weights[start:stop])) + (stop - start) for start, stop in bounds]


def _write_lines(tmp: Path, items: Iterable[Any]) -> None:
    with tmp.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item) + "\n")


def log_done(what: str, ranks: Ranks, items: int, seconds: float) -> None:
    """``rank R/N: K files in S s (X files/s)``: a rank's own rate, start-up and merging left out."""
    rate = items / seconds if seconds > 0 else float("nan")
    logger.info(
        "rank %d/%d: %d %s in %.1f s (%.2f %s/s)",
        ranks.rank,
        ranks.world_size,
        items,
        what,
        seconds,
        rate,
        what,
    )


def log_share(what: str, ranks: Ranks, plan: Plan) -> None:
    """``rank R/N: K of M files``: each rank says how much of the run it does in this launch."""
    logger.info(
        "rank %d/%d: %d of %d %s",
        ranks.rank,
        ranks.world_size,
        plan.items_of(ranks.rank),
        plan.n_items,
        what,
    )
