"""Work done ahead of the reader: the next film's image and heatmap, computed while they read this one.

One background worker per server process runs queued jobs one at a time; model work is
serialised by ``model_lock`` because the Grad-CAM hooks of a shared model must not run twice
at once. ``get`` returns a job's result, waiting for it if it is still running; a job nobody
queued is run on the same worker too (at the front of nothing: the queue is short), so torch
only ever runs on one thread here. Measured on a 2-core CPU, torch work alternating between
Streamlit's script threads and a worker thread ran 5-10x slower than on one thread (each
thread keeps its own spinning OpenMP pool). Results are kept for the last ``max_items`` keys. Jobs
must not call Streamlit (they run outside any script run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)


class Prefetcher:
    def __init__(self, max_items: int = 24) -> None:
        self.max_items = max_items
        self.model_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-prefetch")
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, Future] = OrderedDict()

    def _remember(self, key: Hashable, future: Future) -> None:
        self._items[key] = future
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    @staticmethod
    def _timed(key: Hashable, job: Callable[[], Any]) -> Callable[[], Any]:
        queued = time.perf_counter()

        def run() -> Any:
            start = time.perf_counter()
            try:
                return job()
            finally:
                logger.debug(
                    "job %s: waited %.3f s in the queue, ran %.3f s",
                    key[:1] + key[-2:] if isinstance(key, tuple) else key,
                    start - queued,
                    time.perf_counter() - start,
                )

        return run

    def schedule(self, key: Hashable, job: Callable[[], Any]) -> None:
        """Queue ``job`` under ``key`` unless it is queued, running or done already."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return
            self._remember(key, self._pool.submit(self._timed(key, job)))

    def get(self, key: Hashable, job: Callable[[], Any]) -> Any:
        """The result for ``key``: from the queue (waiting if needed) or computed now."""
        with self._lock:
            future = self._items.get(key)
            if future is not None:
                self._items.move_to_end(key)
        if future is None:
            if threading.current_thread().name.startswith("cxr-prefetch"):
                return job()  # called from inside a job: never wait on our own queue
            with self._lock:
                future = self._items.get(key) or self._pool.submit(self._timed(key, job))
                self._remember(key, future)
        waited = time.perf_counter()
        try:
            return future.result()
        except Exception:
            with self._lock:
                self._items.pop(key, None)
            raise
        finally:
            logger.debug(
                "get %s: %.3f s",
                key[:1] if isinstance(key, tuple) else key,
                time.perf_counter() - waited,
            )

    def peek(self, key: Hashable) -> Any:
        """The result for ``key`` if it is done, else None (never waits: safe inside a job)."""
        with self._lock:
            future = self._items.get(key)
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    def ready(self, key: Hashable) -> bool:
        with self._lock:
            future = self._items.get(key)
        return future is not None and future.done()
