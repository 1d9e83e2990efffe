"""``cxr cache list`` / ``cxr cache prune``: see and reclaim the disk the image caches take."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the image cache needs torch; `cxr --help` and other commands must not load it
    from cxr_core.data.cache import CacheEntry


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser("cache", help="list or prune the decoded-image caches")
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "list",
        help="each cache: size, images, disk, last use, source",
        description="List the caches in a cache folder, most recently used first.",
    )
    p.add_argument(
        "--dir", default=".cxr_cache", help="cache folder (default: .cxr_cache, the runs' default)"
    )
    p.set_defaults(handler=_list)
    p = sub.add_parser(
        "prune",
        help="delete caches not used for a while, and debris of killed builds",
        description="Delete caches no run has opened for --unused-days days, and half-written files "
        "of builds that were killed. A run that needs a deleted cache rebuilds it.",
    )
    p.add_argument(
        "--unused-days",
        type=float,
        required=True,
        help="delete caches unused for this many days (0: all)",
    )
    p.add_argument("--dir", default=".cxr_cache", help="cache folder (default: .cxr_cache)")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(handler=_prune)


def _table(entries: list[CacheEntry]) -> str:
    now = time.time()
    lines = [f"{'cache':<34} {'px':>4} {'images':>7} {'MB':>8} {'unused':>8}  source"]
    for e in entries:
        source = e.source if e.complete else "(debris of an interrupted build)"
        lines.append(
            f"{e.stem:<34} {e.size:>4} {e.images:>7} {e.nbytes / 1e6:>8.1f} "
            f"{(now - e.last_used) / 86400:>7.1f}d  {source}"
        )
    lines.append(f"{len(entries)} cache(s), {sum(e.nbytes for e in entries) / 1e6:.1f} MB")
    return "\n".join(lines)


def _list(args: argparse.Namespace) -> int:
    from cxr_core.data.cache import list_caches

    print(_table(list_caches(args.dir)))
    return 0


def _prune(args: argparse.Namespace) -> int:
    from cxr_core.data.cache import prune_caches

    doomed = prune_caches(args.dir, unused_days=args.unused_days, dry_run=args.dry_run)
    print(("Would delete:\n" if args.dry_run else "Deleted:\n") + _table(doomed))
    return 0
