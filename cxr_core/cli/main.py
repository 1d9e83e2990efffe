"""The ``cxr`` command line.

Each module in :mod:`cxr_core.cli.commands` adds its own subcommands through a
``register(subparsers)`` function, so commands live next to nothing but their own
argument parsing; the work itself is done by library functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from cxr_core.cli import commands
from cxr_core.errors import CXRError
from cxr_core.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr", description="Chest X-ray classifiers: data, training, evaluation, explanations."
    )
    parser.add_argument("--version", action="version", version=f"cxr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


class _ConsoleHandler(logging.Handler):
    """Library messages as plain lines: information on stdout, warnings and errors on stderr.

    The stream is looked up at each message rather than bound once, so output follows
    whatever ``sys.stdout``/``sys.stderr`` are when the message is logged (tests capture them).
    """

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the command down
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Route the ``cxr_core`` loggers to the console once per process."""
    root = logging.getLogger("cxr_core")
    if not any(isinstance(h, _ConsoleHandler) for h in root.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    configure_logging()
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
