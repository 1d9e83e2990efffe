"""Scores kept on disk, so reopening a worklist (or reloading the page) never rescores a film.

A score is keyed by the SHA-256 of the film's bytes, the model's weights checksum and the lung
model's (the gate's warnings depend on it), plus :data:`CACHE_VERSION`: the same file scored by
the same models always hits, whatever it is called or wherever it came from; a retrained model
misses. The record holds what the Predictor said (its outcome, reason, probabilities and gate
warnings, or why the file could not be scored and whether it was readable) and a few header
fields for the worklist's columns; the calls are worked out when read, at the thresholds in
force then.

Files: ``<root>/<2 hex>/<key>.json``, written atomically. Aliases (``<root>/aliases/``) map a
stable name of a film's content (a DICOM SOP Instance UID) to its content hash, so a PACS film
scored before is not even fetched again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxr_core.utils.atomic import write_text_atomically

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: the Predictor's outcome and reason are stored
CACHE_ENV = "CXR_WORKLIST_CACHE"


def default_cache_dir() -> Path:
    """``CXR_WORKLIST_CACHE``, else ``~/.cxr/worklist-cache``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cxr" / "worklist-cache").expanduser()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CachedScore:
    """What scoring one film gave, as stored (see the module docstring)."""

    probabilities: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    outcome: str = ""  # the Predictor's outcome; empty when it never judged the film
    reason: str = ""
    error: str = ""
    readable: bool = True
    header: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CachedScore:
        data = json.loads(text)
        return cls(
            probabilities={str(k): float(v) for k, v in data["probabilities"].items()},
            warnings=[str(w) for w in data["warnings"]],
            outcome=str(data["outcome"]),
            reason=str(data["reason"]),
            error=str(data["error"]),
            readable=bool(data["readable"]),
            header={str(k): str(v) for k, v in data.get("header", {}).items()},
        )


class ScoreCache:
    """The on-disk scores of one model pair (classifier + lung model) under ``root``."""

    def __init__(self, root: str | os.PathLike[str], model_sha: str, lung_sha: str = "") -> None:
        self.root = Path(root)
        self._model = hashlib.sha256(f"{CACHE_VERSION}|{model_sha}|{lung_sha}".encode()).hexdigest()

    def _path(self, content: str) -> Path:
        key = hashlib.sha256(f"{self._model}|{content}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def get(self, content: str) -> CachedScore | None:
        """The stored score of the film whose bytes hash to ``content``, or None."""
        path = self._path(content)
        try:
            return CachedScore.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring the unreadable cached score %s (%s)", path, exc)
            return None

    def put(self, content: str, score: CachedScore) -> None:
        write_text_atomically(self._path(content), score.to_json())

    def _alias_path(self, alias: str) -> Path:
        return self.root / "aliases" / f"{hashlib.sha256(alias.encode()).hexdigest()}.txt"

    def content_of(self, alias: str) -> str | None:
        """The content hash recorded for ``alias`` (e.g. a SOP Instance UID), or None."""
        try:
            return self._alias_path(alias).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def remember(self, alias: str, content: str) -> None:
        write_text_atomically(self._alias_path(alias), content)
