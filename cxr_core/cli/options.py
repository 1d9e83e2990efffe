"""Options shared by the commands that rebuild a checkpoint's data from its model card
(``cxr evaluate``, ``cxr card refresh``, ``cxr gate fit``): one spelling, help and default each."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import yaml

from cxr_core.errors import ConfigError

if TYPE_CHECKING:  # the parsers are built before any command runs: keep torch out of `cxr --help`
    from cxr_core.models.card import ModelCard

DEFAULT_N_BOOT = 1000
DEFAULT_SEED = 0


def add_card_data_options(parser: argparse.ArgumentParser, *, formats: bool = True) -> None:
    """--data / --format / --cache-dir: where the card's dataset and image cache are now."""
    parser.add_argument(
        "--data",
        default=None,
        help="dataset folder or label CSV (default: the path in the model card)",
    )
    if formats:
        parser.add_argument(
            "--format",
            default=None,
            help="auto or a format name (cxr data inspect --help lists them; default: as in the card)",
        )
    parser.add_argument(
        "--cache-dir", default=None, help="image cache folder (default: the training run's)"
    )


def add_bootstrap_options(
    parser: argparse.ArgumentParser, *, seed_help: str = "bootstrap seed"
) -> None:
    """--n-boot / --seed, defaulting to what the card was validated with (see :func:`bootstrap_settings`)."""
    parser.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help=f"bootstrap resamples (default: as in the card, else {DEFAULT_N_BOOT})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"{seed_help} (default: as in the card, else {DEFAULT_SEED})",
    )


def add_compute_options(
    parser: argparse.ArgumentParser, *, batch_size: int = 64, progress: bool = True
) -> None:
    """--batch-size / --device (/ --no-progress)."""
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    if progress:
        parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def bootstrap_settings(args: argparse.Namespace, card: ModelCard) -> tuple[int, int]:
    """(n_boot, seed): the command line's, else the card's validation settings, so that a re-run
    reproduces the card's confidence intervals."""
    validation = card.validation or {}
    n_boot = (
        args.n_boot if args.n_boot is not None else int(validation.get("n_boot") or DEFAULT_N_BOOT)
    )
    seed = args.seed if args.seed is not None else int(validation.get("seed") or DEFAULT_SEED)
    return n_boot, seed


def add_actor_options(parser: argparse.ArgumentParser) -> None:
    """--db / --as: which review database, and whose role the command runs with."""
    parser.add_argument(
        "--db",
        default=None,
        help="the review database: a folder holding review.sqlite3, or a PostgreSQL URL "
        "(postgresql://user@host:5432/db); default: $CXR_REVIEW_DB, else $CXR_REVIEW_DIR, "
        "else ~/.cxr",
    )
    parser.add_argument(
        "--as",
        dest="as_user",
        default=None,
        metavar="USER",
        help="run with USER's role (as listed by `cxr users list`) and see what they would; "
        "default: you, the operator, as admin",
    )


def acting_store(args: argparse.Namespace):
    """The review database of ``--db`` acting for ``--as USER``, else for the operator (an admin)."""
    from cxr_core.artifacts.review_store import ReviewStore

    store = ReviewStore(args.db)
    return store.acting(store.users.named(args.as_user)) if args.as_user else store


def parse_adapter_options(items: list[str]) -> dict:
    """``["labels=physician", "pediatric=false"]`` -> {"labels": "physician", "pediatric": False}."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--option {item!r} is not KEY=VALUE (e.g. --option consensus=majority)"
            )
        out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return out
