"""A memory-mapped uint8 image cache: decode every radiograph once, not once per epoch.

Decoding a 1024-px PNG costs milliseconds; a training epoch over NIH decodes 112,000 of them,
which starves a GPU. ``ImageCache.build`` decodes each image of a manifest once (in parallel),
resizes it with :func:`cxr_core.data.preprocessing.to_cache_array` and stores all of them in ONE
``np.memmap`` file of shape (N, size, size) next to an index JSON. Reading a row is then a
page-cache memcpy.

On disk, in ``cache_dir``::

    cache-256px-<key>.u8     raw uint8, N * size * size bytes, rows in manifest order
    cache-256px-<key>.json   index: image ids, original shapes, manifest fingerprint, ...

The key hashes everything the stored pixels depend on: the image ids and paths in row order,
every file's size and modification time, the cache size and the format version. Rebuilding
is skipped when the key matches, and happens whenever an image is added, removed, reordered
or replaced. Labels and splits are deliberately not part of the key: reassigning splits does
not change a single pixel, so it must not cost a re-decode (the manifest fingerprint is still
recorded in the index for provenance).

A cache can also hold the rows after a per-image step that depends on more than the file, such
as lung masking (``transform``, a :class:`CacheTransform`): it is derived from the plain cache
of the same images and its key also hashes the step's ``identity`` (for lung masking: the lung
model's weights checksum, the dilation, the masking version), so a masked and an unmasked cache,
or two maskings, never share a file. Its index records that identity (``transform``), and
readers that need a particular step check it (:attr:`ImageCache.transform`).

The index is written last and both files are renamed into place atomically, so an
interrupted build leaves at most a ``.partial`` file that is never mistaken for a cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from cxr_core.data.imaging import load_image
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import to_cache_array
from cxr_core.errors import ConfigError, DatasetError, ImageLoadError
from cxr_core.utils.atomic import remove_stale_temp_files

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump whenever the stored bytes change (layout, or to_cache_array's resizing)
_MAX_LISTED_FAILURES = 5
_DERIVE_CHUNK = 64  # rows handed to a cache transform at a time


class CacheTransform(Protocol):
    """A deterministic step applied to every cached row: uint8 (B, S, S) -> uint8 (B, S, S).

    ``identity`` names everything its output depends on besides the input rows; it becomes
    part of the cache key.
    """

    @property
    def identity(self) -> str: ...

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def default_workers() -> int:
    """Decoding processes: the CPUs this process may use, at most 8 (beyond that disk I/O dominates)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


class ImageCache:
    """Rows of uint8 (size, size) images in manifest order, read from one memory-mapped file.

    Pickles as a few paths and ids (the memmap is reopened lazily in each DataLoader worker),
    so it can be handed to any number of worker processes cheaply.
    """

    def __init__(self, index_path: Path, index: dict[str, Any]) -> None:
        self.index_path = Path(index_path)
        self.data_path = self.index_path.with_name(index["data_file"])
        self.key: str = index["key"]
        self.size: int = int(index["size"])
        self.image_ids: tuple[str, ...] = tuple(index["image_ids"])
        self.original_shapes: tuple[tuple[int, int], ...] = tuple(
            (int(h), int(w)) for h, w in index["original_shapes"]
        )
        self.manifest_fingerprint: str = index.get("manifest_fingerprint", "")
        self.transform: str = index.get(
            "transform", ""
        )  # identity of the step applied to the rows ("": none)
        self._array: np.memmap | None = None

    # ------------------------------------------------------------------ reading

    @classmethod
    def open(cls, index_path: str | os.PathLike[str]) -> ImageCache:
        """Open a finished cache from its index JSON; the data file is checked, not read."""
        index_path = Path(index_path)
        try:
            index = json.loads(index_path.read_text())
            if index.get("format_version") != FORMAT_VERSION:
                raise DatasetError(
                    f"image cache {index_path} has format version {index.get('format_version')}, this program reads "
                    f"version {FORMAT_VERSION}; delete it and build the cache again"
                )
            cache = cls(index_path, index)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DatasetError(
                f"image cache index {index_path} is unreadable ({exc}); delete it and build the cache again"
            ) from exc
        expected = len(cache.image_ids) * cache.size * cache.size
        actual = cache.data_path.stat().st_size if cache.data_path.is_file() else -1
        if actual != expected or len(cache.original_shapes) != len(cache.image_ids):
            raise DatasetError(
                f"image cache {index_path} is incomplete (data file {cache.data_path.name} has {actual} bytes, "
                f"expected {expected}); delete both files and build the cache again"
            )
        try:
            os.utime(index_path)  # the index's mtime is the cache's last use, for `cxr cache prune`
        except OSError:
            pass  # a read-only shared cache is still usable; it just never looks recently used
        return cache

    @property
    def array(self) -> np.memmap:
        """The read-only (N, size, size) memmap, opened on first use in each process."""
        if self._array is None:
            self._array = np.memmap(
                self.data_path,
                dtype=np.uint8,
                mode="r",
                shape=(len(self.image_ids), self.size, self.size),
            )
        return self._array

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> np.ndarray:
        """uint8 (size, size) copy of row ``i`` (= row ``i`` of the manifest the cache was built from)."""
        return np.array(self.array[i])

    def get_batch(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 (B, size, size) copy of several rows in one gather."""
        return np.asarray(self.array[np.asarray(rows, dtype=np.int64)])

    def rows_for(self, manifest: Manifest) -> np.ndarray:
        """Cache row of each manifest row, so a split of the manifest the cache was built from can use it."""
        position = {image_id: row for row, image_id in enumerate(self.image_ids)}
        ids = manifest.frame["image_id"].tolist()
        missing = [image_id for image_id in ids if image_id not in position]
        if missing:
            shown = ", ".join(missing[:_MAX_LISTED_FAILURES])
            raise DatasetError(
                f"{len(missing)} of {len(ids)} images of {manifest.source or 'the manifest'} are "
                "not in the image cache "
                f"{self.index_path.name} (first: {shown}); build the cache from this manifest"
            )
        return np.fromiter((position[i] for i in ids), dtype=np.int64, count=len(ids))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None
        return state

    def __repr__(self) -> str:
        return f"ImageCache({len(self)} images, {self.size}px, {self.index_path})"

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        manifest: Manifest,
        cache_dir: str | os.PathLike[str],
        size: int,
        *,
        workers: int | None = None,
        progress: bool = True,
        transform: CacheTransform | None = None,
    ) -> ImageCache:
        """The cache of ``manifest`` at ``size`` px: reused when nothing changed, else (re)built.

        With ``transform``, the cache of the transformed rows, derived from (and leaving in
        place) the plain cache of the same images.

        Raises ``DatasetError`` listing the files that are missing or cannot be decoded; a
        cache is only ever produced for a manifest whose every image could be read.
        """
        if not isinstance(size, int) or size < 8:
            raise ConfigError(f"cache size must be a whole number of pixels >= 8, not {size!r}")
        if len(manifest) == 0:
            raise DatasetError(f"{manifest.source or 'the manifest'} has no images to cache")
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = cache_key(manifest, size)
        stem = f"cache-{size}px-{key}"
        plain = cls._existing(cache_dir, stem, key)
        if plain is None:
            _remove_abandoned_partials(cache_dir, stem)
            plain = cls._build_new(
                manifest, cache_dir, stem, key, size, workers or default_workers(), progress
            )
        if transform is None:
            return plain
        key = derived_key(plain.key, transform.identity)
        stem = f"cache-{size}px-{key}"
        derived = cls._existing(cache_dir, stem, key)
        if derived is None:
            _remove_abandoned_partials(cache_dir, stem)
            derived = cls._derive(plain, transform, cache_dir, stem, key, progress)
        return derived

    @classmethod
    def _existing(cls, cache_dir: Path, stem: str, key: str) -> ImageCache | None:
        index_path = cache_dir / f"{stem}.json"
        if not index_path.is_file():
            return None
        try:
            cache = cls.open(index_path)
        except DatasetError:
            return None  # damaged by hand or by disk trouble: build it again
        return cache if cache.key == key else None

    @classmethod
    def _derive(
        cls,
        plain: ImageCache,
        transform: CacheTransform,
        cache_dir: Path,
        stem: str,
        key: str,
        progress: bool,
    ) -> ImageCache:
        """Apply ``transform`` to every row of ``plain``, in row order, into a new cache file."""
        n, size = len(plain), plain.size
        _check_free_space(cache_dir, n * size * size)
        with _staged(cache_dir, stem) as (partial, publish):
            out = np.memmap(partial, dtype=np.uint8, mode="w+", shape=(n, size, size))
            with tqdm(
                total=n,
                desc=f"{transform.identity.split()[0]}: {n} cached images",
                unit="img",
                disable=not progress,
            ) as bar:
                for start in range(0, n, _DERIVE_CHUNK):
                    rows = np.arange(start, min(n, start + _DERIVE_CHUNK))
                    result = np.asarray(transform(plain.get_batch(rows)))
                    if result.dtype != np.uint8 or result.shape != (len(rows), size, size):
                        raise DatasetError(
                            f"the cache step {transform.identity!r} returned {result.dtype} {result.shape} for "
                            f"{len(rows)} rows of {size} px; it must return uint8 rows of the same shape"
                        )
                    out[rows[0] : rows[-1] + 1] = result
                    bar.update(len(rows))
            out.flush()
            del out
            index = json.loads(plain.index_path.read_text())
            index.update(
                {
                    "key": key,
                    "data_file": f"{stem}.u8",
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "transform": transform.identity,
                    "derived_from": plain.key,
                }
            )
            publish(index)
        return cls.open(cache_dir / f"{stem}.json")

    @classmethod
    def _build_new(
        cls,
        manifest: Manifest,
        cache_dir: Path,
        stem: str,
        key: str,
        size: int,
        workers: int,
        progress: bool,
    ) -> ImageCache:
        n = len(manifest)
        paths = manifest.frame["path"].tolist()
        ids = manifest.frame["image_id"].tolist()
        shapes: list[tuple[int, int]] = [(0, 0)] * n
        failures: list[tuple[int, str]] = []
        _check_free_space(cache_dir, n * size * size)
        with _staged(cache_dir, stem) as (partial, publish):
            np.memmap(partial, dtype=np.uint8, mode="w+", shape=(n, size, size)).flush()
            chunk = max(1, min(64, math.ceil(n / (workers * 8))))
            chunks = [(start, paths[start : start + chunk]) for start in range(0, n, chunk)]
            bar = tqdm(
                total=n, desc=f"Caching {n} images at {size}px", unit="img", disable=not progress
            )
            with bar, closing(_decode_all(chunks, partial, n, size, workers)) as results:
                for done, chunk_shapes, chunk_failures in results:
                    for row, shape in chunk_shapes:
                        shapes[row] = shape
                    failures.extend(chunk_failures)
                    bar.update(done)
            if failures:
                raise DatasetError(_failure_message(failures, ids, n, manifest.source))
            publish(
                {
                    "format_version": FORMAT_VERSION,
                    "key": key,
                    "size": size,
                    "count": n,
                    "dtype": "uint8",
                    "data_file": f"{stem}.u8",
                    "manifest_fingerprint": manifest.fingerprint(),
                    "source": manifest.source,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "image_ids": ids,
                    "original_shapes": [list(s) for s in shapes],
                }
            )
        return cls.open(cache_dir / f"{stem}.json")


@contextmanager
def _staged(cache_dir: Path, stem: str) -> Iterator[tuple[Path, Callable[[dict], None]]]:
    """(partial data file, publish(index)) for building cache ``stem``: the data and then its index
    appear under their final names only when ``publish`` is called, and whatever was left
    half-written is removed either way (a token makes the names unique even for two threads)."""
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    partial = cache_dir / f"{stem}.u8.partial-{token}"
    index_partial = cache_dir / f"{stem}.json.partial-{token}"

    def publish(index: dict) -> None:
        os.replace(partial, cache_dir / f"{stem}.u8")
        index_partial.write_text(json.dumps(index))
        os.replace(index_partial, cache_dir / f"{stem}.json")

    try:
        yield partial, publish
    finally:
        for leftover in (partial, index_partial):
            leftover.unlink(missing_ok=True)


_CACHE_FILE = re.compile(r"^(cache-(\d+)px-[0-9a-f]+)\.(u8|json)(?:\.partial-(\d+)-[0-9a-f]+)?$")


@dataclass(frozen=True)
class CacheEntry:
    """One cache in a cache folder: what it holds, what it weighs, when it was last used.

    ``complete`` is False for the debris of killed builds (a data file without its index, or
    half-written files of a process that is gone): never readable, only taking up disk.
    """

    stem: str
    files: tuple[Path, ...]
    size: int
    images: int
    nbytes: int
    source: str
    last_used: float
    complete: bool


def list_caches(cache_dir: str | os.PathLike[str]) -> list[CacheEntry]:
    """The caches in ``cache_dir``, most recently used first (builds still running are left out).

    Every training or evaluation run with other images or another size adds a cache and none
    is ever deleted automatically, so a cache folder grows by hundreds of MB per dataset.
    """
    folder = Path(cache_dir)
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a folder; pass the cache folder of your runs (data.cache_dir)"
        )
    groups: dict[tuple[str, int], list[Path]] = {}
    for path in folder.iterdir():
        match = _CACHE_FILE.match(path.name)
        if match and not (match.group(4) and _process_alive(int(match.group(4)))):
            groups.setdefault((match.group(1), int(match.group(2))), []).append(path)
    entries = []
    for (stem, size), files in groups.items():
        index_path = folder / f"{stem}.json"
        try:
            index = json.loads(index_path.read_text())
            complete = (folder / index["data_file"]).is_file()
        except (OSError, ValueError, KeyError, TypeError):
            index, complete = {}, False
        entries.append(
            CacheEntry(
                stem=stem,
                files=tuple(sorted(files)),
                size=size,
                images=int(index.get("count", 0)),
                nbytes=sum(p.stat().st_size for p in files),
                source=str(index.get("source", "")),
                last_used=max(p.stat().st_mtime for p in files),
                complete=complete,
            )
        )
    return sorted(entries, key=lambda e: e.last_used, reverse=True)


def prune_caches(
    cache_dir: str | os.PathLike[str], *, unused_days: float, dry_run: bool = False
) -> list[CacheEntry]:
    """Delete caches unused for ``unused_days`` days and all debris of killed builds; returns them.

    The index goes first, so a cache interrupted mid-deletion is debris, never a valid cache
    with missing pixels. A run that needs a deleted cache simply rebuilds it.
    """
    if unused_days < 0:
        raise ConfigError(f"--unused-days must be >= 0, got {unused_days}")
    cutoff = time.time() - unused_days * 86400
    doomed = [e for e in list_caches(cache_dir) if not e.complete or e.last_used < cutoff]
    if not dry_run:
        for entry in doomed:
            for path in sorted(entry.files, key=lambda p: p.suffix != ".json"):
                path.unlink(missing_ok=True)
        remove_stale_temp_files(
            cache_dir
        )  # atomic-write debris (killed writers), logged when found
    return doomed


def cache_key(manifest: Manifest, size: int) -> str:
    """Hash of what the cached pixels depend on; raises ``DatasetError`` listing missing files."""
    h = hashlib.sha256(f"cxr-image-cache v{FORMAT_VERSION} size={size}\n".encode())
    missing: list[str] = []
    for image_id, path in zip(manifest.frame["image_id"], manifest.frame["path"]):
        try:
            st = os.stat(path)
        except OSError:
            missing.append(f"{image_id} ({path})")
            continue
        h.update(f"{image_id}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if missing:
        shown = "; ".join(missing[:_MAX_LISTED_FAILURES])
        raise DatasetError(
            f"{len(missing)} of {len(manifest)} image files listed in {manifest.source or 'the manifest'} do not exist "
            f"(first: {shown}); check the dataset folder or remove these rows"
        )
    return h.hexdigest()[:20]


def derived_key(plain_key: str, identity: str) -> str:
    """Key of the cache of ``plain_key``'s rows after the step named ``identity``."""
    return hashlib.sha256(
        f"cxr-image-cache v{FORMAT_VERSION} derived from {plain_key}\n{identity}\n".encode()
    ).hexdigest()[:20]


def _decode_all(
    chunks: list[tuple[int, list[str]]], data_path: Path, n: int, size: int, workers: int
) -> Iterator[tuple[int, list[tuple[int, tuple[int, int]]], list[tuple[int, str]]]]:
    """Yield (images done, [(row, shape)], [(row, error)]) per chunk, in-process or on a pool."""
    if workers <= 1 or len(chunks) <= 1:
        for start, paths in chunks:
            yield (len(paths), *_decode_chunk(str(data_path), n, size, start, paths))
        return
    context = multiprocessing.get_context(_start_method())
    with ProcessPoolExecutor(
        max_workers=min(workers, len(chunks)),
        mp_context=context,
        initializer=_die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        pending = {
            pool.submit(_decode_chunk, str(data_path), n, size, start, paths): len(paths)
            for start, paths in chunks
        }
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    count = pending.pop(future)
                    yield (count, *future.result())
        finally:
            for future in pending:
                future.cancel()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this decoding worker when the process that started it dies.

    A parent killed with SIGKILL cannot shut its pool down, and orphaned workers would go on
    decoding (and holding memory and the cache file) for minutes. On Linux the kernel sends the
    worker SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); elsewhere a daemon thread polls
    the parent pid once a second.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(
        target=_exit_when_orphaned, args=(parent,), daemon=True, name="cxr-parent-watch"
    ).start()


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _start_method() -> str:
    """ "fork" on Linux: a spawned worker spends seconds re-importing torch before decoding anything.

    A forked child only runs decoding code (file reads, Pillow, pydicom, numpy) that takes no
    lock another thread of the parent could be holding, the same bet torch's DataLoader makes.
    Elsewhere fork is unsafe (macOS system libraries) or absent, so the platform default is used.
    """
    return "fork" if sys.platform.startswith("linux") else multiprocessing.get_start_method()


def _decode_chunk(
    data_path: str, n: int, size: int, start: int, paths: list[str]
) -> tuple[list[tuple[int, tuple[int, int]]], list[tuple[int, str]]]:
    """Decode consecutive rows straight into the shared memmap; return shapes and per-row errors."""
    out = np.memmap(data_path, dtype=np.uint8, mode="r+", shape=(n, size, size))
    shapes: list[tuple[int, tuple[int, int]]] = []
    failures: list[tuple[int, str]] = []
    for row, path in enumerate(paths, start=start):
        try:
            pixels = load_image(path, name=path).pixels
        except ImageLoadError as exc:
            failures.append((row, str(exc)))
            continue
        out[row] = to_cache_array(pixels, size)
        shapes.append((row, (int(pixels.shape[0]), int(pixels.shape[1]))))
    out.flush()
    del out
    return shapes, failures


def _check_free_space(cache_dir: Path, needed: int) -> None:
    """Refuse early: a memmap write on a full disk kills the decoding process (SIGBUS) mid-build."""
    free = shutil.disk_usage(cache_dir).free
    if free < needed * 1.05:
        raise DatasetError(
            f"the image cache needs {needed / 2**30:.2f} GiB but {cache_dir} has {free / 2**30:.2f} GiB free; "
            "free disk space, choose another cache folder, or use a smaller cache size"
        )


def _failure_message(failures: list[tuple[int, str]], ids: list[str], n: int, source: str) -> str:
    failures = sorted(failures)
    lines = [f"  - {ids[row]}: {error}" for row, error in failures[:_MAX_LISTED_FAILURES]]
    more = len(failures) - _MAX_LISTED_FAILURES
    if more > 0:
        lines.append(f"  ... and {more} more")
    return (
        f"{len(failures)} of {n} images in {source or 'the manifest'} could not be read, so no cache was built:\n"
        + "\n".join(lines)
        + "\nReplace or remove these files (or drop their rows from the manifest) and build again."
    )


def _remove_abandoned_partials(cache_dir: Path, stem: str) -> None:
    """Delete half-written files of builds whose process is gone (killed mid-build)."""
    pattern = re.compile(re.escape(stem) + r"\.(u8|json)\.partial-(\d+)-[0-9a-f]+$")
    for path in cache_dir.iterdir():
        match = pattern.match(path.name)
        if match and not _process_alive(int(match.group(2))):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
