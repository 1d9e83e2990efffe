"""Gallery thumbnails: made once from real radiographs, reused while the film is unchanged."""

from __future__ import annotations

import os
import shutil

from PIL import Image

from cxr_core.artifacts.thumbnails import THUMBNAIL_SIDE, thumbnail, thumbnails


def test_thumbnail_of_a_real_film_is_made_once_and_follows_the_file(nih14_root, tmp_path):
    film = tmp_path / "film.png"
    shutil.copy(sorted((nih14_root / "images").glob("*.png"))[0], film)
    cache = tmp_path / "thumbs"
    first = thumbnail(film, cache)
    with Image.open(first) as image:
        assert image.format == "JPEG" and max(image.size) == THUMBNAIL_SIDE
    made = first.stat().st_mtime_ns
    assert thumbnail(film, cache) == first and first.stat().st_mtime_ns == made  # reused
    stat = film.stat()
    os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the film was replaced
    second = thumbnail(film, cache)
    assert second != first and second.is_file()
    assert not list(cache.rglob("*.tmp"))


def test_an_unreadable_or_missing_film_gets_no_thumbnail_and_the_rest_do(
    nih14_root, tmp_path, caplog
):
    good = sorted((nih14_root / "images").glob("*.png"))[0]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    got = thumbnails([good, bad, None, tmp_path / "gone.png"], tmp_path / "thumbs")
    assert got[0] is not None and got[1:] == [None, None, None]
    assert "broken.png" in caplog.text
