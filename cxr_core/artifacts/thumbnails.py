"""Small JPEG thumbnails of evaluated films, cached on disk, for galleries.

Decoding a 3,000 px 16-bit DICOM takes a few hundred milliseconds; a gallery of 50 films must
open in about a second. So each film is decoded once, reduced to :data:`THUMBNAIL_SIDE` pixels
on its long side and kept as a JPEG under ``$CXR_THUMBNAIL_DIR`` (default ``~/.cxr/thumbnails``).
The file name is a hash of the film's absolute path, size and modification time (and the
thumbnail size), so an edited or replaced film gets a new thumbnail and a stale one is never
shown. Thumbnails are written atomically, so two sessions making the same one never see half a
file. A film that cannot be read gets no thumbnail (None) and its error is logged, never raised:
one bad file must not blank a gallery.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_core.data.imaging import load_image
from cxr_core.errors import ImageLoadError
from cxr_core.utils.atomic import write_atomically

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 192
"""Long side of a thumbnail in pixels: readable in a 4-6 column grid, about 10 kB as JPEG."""
_VERSION = "1"  # bump when the way thumbnails look changes: old ones are then not reused


def default_thumbnail_dir() -> Path:
    """``$CXR_THUMBNAIL_DIR`` when set, else ``~/.cxr/thumbnails``."""
    env = os.environ.get("CXR_THUMBNAIL_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cxr" / "thumbnails"


def thumbnail_path(film: Path, cache_dir: Path, side: int = THUMBNAIL_SIDE) -> Path:
    """Where ``film``'s thumbnail lives (whether or not it exists yet)."""
    stat = film.stat()
    key = f"{film.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{side}|{_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return cache_dir / digest[:2] / f"{digest}.jpg"


def _render(film: Path, side: int) -> Image.Image:
    pixels = load_image(film).pixels
    gray = Image.fromarray(np.round(pixels * 255.0).astype(np.uint8), mode="L")
    gray.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return gray


def thumbnail(film: str | Path, cache_dir: str | Path, side: int = THUMBNAIL_SIDE) -> Path | None:
    """The cached thumbnail of ``film`` (made now if missing), or None when the film cannot be read."""
    film, cache_dir = Path(film), Path(cache_dir)
    try:
        target = thumbnail_path(film, cache_dir, side)
        if target.is_file():
            return target
        image = _render(film, side)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda tmp: image.save(tmp, format="JPEG", quality=85))
        return target
    except (OSError, ImageLoadError) as exc:
        logger.warning("no thumbnail for %s: %s", film, exc)
        return None


def thumbnails(
    films: Sequence[str | Path | None], cache_dir: str | Path, side: int = THUMBNAIL_SIDE
) -> list[Path | None]:
    """:func:`thumbnail` of each film (None stays None: a film that was not found)."""
    return [None if film is None else thumbnail(film, cache_dir, side) for film in films]
