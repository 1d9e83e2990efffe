"""Pseudonyms for patient and film identifiers in exports: a keyed hash (HMAC-SHA256) with a secret
of this install.

The same identifier always gives the same pseudonym on one install (exports stay linkable across
files and over time), nobody without the key can compute or reverse it (a plain hash of a
patient ID could be recomputed from a list of IDs), and an install's owner can still find a
film by hashing its ID again. The key is 32 random bytes, hex-encoded in
``$CXR_PSEUDONYM_KEY`` (a file path) or ``pseudonym.key`` beside the review database (the state
folder, ``$CXR_REVIEW_DIR`` or ``~/.cxr``), created on first use
with permissions 0600; it never appears in a message, a log line or a ``repr``. Servers that
share one review database should share the key file too, or their exports will not link.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cxr_core.errors import ConfigError
from cxr_core.utils.paths import state_dir

logger = logging.getLogger(__name__)

KEY_FILE = "pseudonym.key"
KEY_ENV = "CXR_PSEUDONYM_KEY"
PREFIX = "anon-"
DIGITS = 20  # hex digits kept: 80 bits, no collision among billions of identifiers
IDENTIFYING_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "patient_id",
    "patient_name",
    "patient_birth_date",
    "accession_number",
    "study_instance_uid",
    "sop_instance_uid",
    "file",
)
"""Columns an export replaces by pseudonyms (those it has)."""


def key_path(folder: str | os.PathLike[str] | None = None) -> Path:
    """Where this install's pseudonym key is: ``$CXR_PSEUDONYM_KEY``, else ``folder`` (the review
    database's) or the state folder."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return (Path(folder).expanduser() if folder is not None else state_dir()) / KEY_FILE


def _create_key(path: Path) -> None:
    """Write a new key readable by its owner only; a key created meanwhile by another process wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # never overwrites: two first uses at once keep one key
            logger.info("created the pseudonym key %s (permissions 0600)", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def _read_key(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="ascii").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the pseudonym key {path}: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 32:
        raise ConfigError(
            f"the pseudonym key {path} is not 64 hexadecimal digits; restore it from a backup "
            "(a new key would give every identifier a new pseudonym)"
        )
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "the pseudonym key %s can be read by other users; restrict it with chmod 600", path
        )
    return key


class Pseudonymiser:
    """Turns identifiers into this install's pseudonyms (``anon-`` and 20 hex digits)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ConfigError("a pseudonym key needs at least 32 bytes")
        self._key = bytes(key)

    def __repr__(self) -> str:  # the key must never reach a log line
        return "Pseudonymiser(key=<hidden>)"

    @classmethod
    def for_install(cls, path: str | os.PathLike[str] | None = None) -> Pseudonymiser:
        """The pseudonymiser with the key at ``path`` (default :func:`key_path`), created on first use."""
        where = Path(path) if path is not None else key_path()
        if not where.is_file():
            _create_key(where)
        return cls(_read_key(where))

    def pseudonym(self, value: object) -> str:
        """The pseudonym of one identifier; an empty value stays empty."""
        text = "" if value is None else str(value)
        if not text:
            return ""
        digest = hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest[:DIGITS]

    def records(
        self,
        rows: Iterable[Mapping[str, object]],
        columns: Sequence[str] = IDENTIFYING_COLUMNS,
    ) -> list[dict[str, object]]:
        """``rows`` with every identifying column they have replaced by its pseudonym."""
        out = []
        for row in rows:
            item = dict(row)
            for column in columns:
                if column in item:
                    item[column] = self.pseudonym(item[column])
            out.append(item)
        return out
