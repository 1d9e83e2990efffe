"""Subcommands of ``cxr``: each module defines ``register(subparsers)`` and sets ``handler``."""
