"""Strict reading of settings mappings (configs, model-card sections).

A misspelt setting must stop a run before it starts, not be ignored for hours of training:
every dataclass built from user-written YAML or a stored card checks its keys here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

from cxr_core.errors import ConfigError


def check_known_keys(cls: type, data: Mapping, what: str, prefix: str = "") -> None:
    """Raise ConfigError naming the keys of ``data`` that ``cls`` (a dataclass) has no field for.

    ``what`` says what the keys are ("augmentation settings"); ``prefix`` is the dotted path of
    a nested section ("optim."), so the message names the key as it is written in the file.
    """
    known = sorted(f.name for f in fields(cls))
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown {what} {', '.join(repr(prefix + k) for k in unknown)}; allowed: {', '.join(known)}"
        )
