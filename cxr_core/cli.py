"""The ``cxr`` command line.

Each module in :mod:`cxr_core.commands` adds its own subcommands through a
``register(subparsers)`` function, so commands live next to nothing but their own
argument parsing; the work itself is done by library functions.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cxr_core import __version__, commands
from cxr_core.errors import CXRError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr", description="Chest X-ray classifiers: data, training, evaluation, explanations.")
    parser.add_argument("--version", action="version", version=f"cxr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CXRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
