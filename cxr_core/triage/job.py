"""Scoring a worklist in the background: rows appear as films are scored, cached ones at once.

:class:`WorklistJob` runs one thread that walks the items in order: a film whose score is
cached (by content, or by alias without fetching it) is done immediately; the others are
fetched, scored through the input gate and cached. :meth:`WorklistJob.snapshot` is safe to
call from any thread at any time (the dashboard polls it to draw the rows scored so far and the
progress bar). A film that cannot be fetched or read gets its error as its score; the job goes
on, and can be cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cxr_core.data.imaging import LoadedImage
from cxr_core.errors import CXRError
from cxr_core.inference.predictor import Predictor
from cxr_core.reporting.scoring import score_film
from cxr_core.triage.cache import CachedScore, ScoreCache, content_hash
from cxr_core.triage.items import WorklistItem

logger = logging.getLogger(__name__)

HEADER_FIELDS = (
    "patient_id",
    "study_date",
    "view_position",
    "modality",
    "body_part",
    "patient_age",
)
"""Header fields kept with a score for the worklist's columns (names are never read)."""


@dataclass(frozen=True)
class WorklistEntry:
    """One scored film of a worklist; ``cached`` when its score came from the cache."""

    item: WorklistItem
    score: CachedScore
    cached: bool = False


@dataclass(frozen=True)
class WorklistProgress:
    """What a worklist's job has done so far (entries in the worklist's order)."""

    entries: tuple[WorklistEntry, ...]
    total: int
    finished: bool
    elapsed_s: float
    first_entry_s: float | None

    @property
    def done(self) -> int:
        return len(self.entries)


def header_of(image: LoadedImage | None) -> dict[str, str]:
    """The worklist's header fields of a decoded film (empty for non-DICOM files)."""
    if image is None:
        return {}
    return {k: str(image.meta[k]) for k in HEADER_FIELDS if image.meta.get(k) not in (None, "")}


def score_item(
    predictor: Predictor, item: WorklistItem, cache: ScoreCache
) -> tuple[CachedScore, bool]:
    """The score of one item and whether it came from the cache (fetching and scoring on a miss)."""
    content = cache.content_of(item.alias) if item.alias else None
    hit = cache.get(content) if content else None
    if hit is not None:
        return hit, True
    try:
        data = item.read()
    except (OSError, CXRError) as exc:
        return CachedScore(
            error=f"{item.name}: could not be fetched ({exc})", readable=False
        ), False
    content = content_hash(data)
    if item.alias:
        cache.remember(item.alias, content)
    hit = cache.get(content)
    if hit is not None:
        return hit, True
    scored = score_film(predictor, data, item.name)
    prediction = scored.prediction
    score = CachedScore(
        probabilities=dict(prediction.probabilities) if prediction is not None else {},
        warnings=list(prediction.warnings) if prediction is not None else [],
        outcome=prediction.outcome if prediction is not None else "",
        reason=prediction.reason if prediction is not None else "",
        error="" if prediction is not None else scored.outcome.reason,
        readable=scored.image is not None,
        header=header_of(scored.image),
    )
    cache.put(content, score)
    return score, False


class WorklistJob:
    """The background scoring of one worklist with one model (see the module docstring)."""

    def __init__(
        self, predictor: Predictor, items: Sequence[WorklistItem], cache: ScoreCache
    ) -> None:
        self.predictor = predictor
        self.items = tuple(items)
        self.cache = cache
        self._entries: list[WorklistEntry] = []
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._started = 0.0
        self._ended: float | None = None
        self._first: float | None = None
        self._thread = threading.Thread(target=self._run, name="cxr-worklist", daemon=True)

    def start(self) -> WorklistJob:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Stop after the film being scored now."""
        self._cancel.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the job ends (or ``timeout_s``); True when it has ended."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        for item in self.items:
            if self._cancel.is_set():
                break
            try:
                score, cached = score_item(self.predictor, item, self.cache)
            except Exception as exc:  # noqa: BLE001 - one film's failure must not end the worklist
                logger.exception("worklist: scoring %s failed", item.name)
                score, cached = CachedScore(error=f"{item.name}: scoring failed ({exc})"), False
            with self._lock:
                self._entries.append(WorklistEntry(item, score, cached))
                if self._first is None:
                    self._first = time.perf_counter() - self._started
        self._ended = time.perf_counter()

    def snapshot(self) -> WorklistProgress:
        with self._lock:
            entries = tuple(self._entries)
            first = self._first
        finished = not self._thread.is_alive() and self._started > 0
        end = self._ended if finished and self._ended is not None else time.perf_counter()
        return WorklistProgress(
            entries=entries,
            total=len(self.items),
            finished=finished,
            elapsed_s=end - self._started if self._started else 0.0,
            first_entry_s=first,
        )
