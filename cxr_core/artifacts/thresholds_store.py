"""Named decision-threshold sets stored next to a checkpoint.

A model outputs probabilities; turning them into "finding present" needs one threshold per
class, and the right values depend on the clinical use (screening wants sensitivity, triage
wants specificity). Reviewers tune these in the dashboard and save them under a name:

```
<checkpoint dir>/thresholds/<name>.json     {name, thresholds {class: float}, method, notes, created}
<checkpoint dir>/thresholds/active.txt      the name of the model's default set (what Predict uses
                                            unless a browser session picked another one to view)
<checkpoint dir>/thresholds/activations.jsonl  audit log: who made which set the default, when, from which
<checkpoint dir>/thresholds/history/        every overwritten version, time-stamped
<checkpoint dir>/thresholds/readers.json    per reader name: the set they chose to read with ("" follows
                                            the default) and how many default changes they have seen
```

Making a set the default is an explicit act recorded in ``activations.jsonl`` (one JSON
object a line: ``when``, ``by``, ``from``, ``to``); the log is only ever appended to.

Who may: saving a set needs the ``reader`` role and making one the default ``admin``
(:mod:`cxr_core.access.roles`), checked here for the store's actor (:meth:`ThresholdStore.acting`;
without one, the process's operator). Given the review database's audit log, both are also
written there (who, when, which checkpoint and set).

Writes go through a temporary file, ``fsync`` and ``os.replace`` so a crash or a second
browser tab never leaves a half-written set, and overwriting a name first moves the previous
file into ``history/`` so no set is ever lost. Without any saved set, the thresholds stored in
the model card (chosen on the validation split at training time) are the active set.

A reader's own choice of set is kept per reader name (:meth:`ThresholdStore.choose`), so it
survives a reload or a new browser and is never changed by someone else making another set the
default; :meth:`ThresholdStore.unseen_changes` lists the default changes the reader has not yet
acknowledged (:meth:`ThresholdStore.acknowledge`), so each reader is told who changed what, when.

Dashboard servers that share threshold sets keep them in a database instead
(:mod:`cxr_core.artifacts.thresholds_tables`): ``ThresholdStore(..., db=URL)``, or
``CXR_REVIEW_DB`` set to a PostgreSQL URL (the review database). The methods are the same;
earlier versions of a set are then read with :meth:`ThresholdStore.versions` (``history()``
lists files). Each reader's own choice of set stays a file next to the checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

try:  # POSIX: serialise save() across threads and processes so no version slips past history/
    import fcntl
except (
    ImportError
):  # pragma: no cover - Windows keeps atomic writes, without the cross-process lock
    fcntl = None

from cxr_core.access import roles
from cxr_core.access.roles import Actor, operator
from cxr_core.artifacts import audit_log
from cxr_core.artifacts.audit_log import AuditLog
from cxr_core.artifacts.database import is_database_url
from cxr_core.artifacts.run_dir import RunDir
from cxr_core.artifacts.thresholds_tables import ThresholdTables
from cxr_core.errors import ThresholdSetError, UnknownClassError
from cxr_core.utils.atomic import write_text_atomically

CARD_SET = "card"
"""Name of the built-in set holding the model card's thresholds; it cannot be overwritten."""

ACTIVE_FILE = "active.txt"
AUDIT_FILE = "activations.jsonl"
READERS_FILE = "readers.json"
HISTORY_DIR = "history"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]{0,63}$")


@dataclass(frozen=True)
class ThresholdSet:
    """One named mapping class -> probability threshold, with how it was chosen."""

    name: str
    thresholds: dict[str, float]
    method: str = ""
    notes: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "thresholds": dict(self.thresholds),
            "method": self.method,
            "notes": self.notes,
            "created": self.created,
            **({"extra": self.extra} if self.extra else {}),
        }


def validate_name(name: str) -> str:
    """Return ``name`` stripped, or raise when it could escape the folder or is reserved."""
    clean = str(name).strip()
    if not _NAME_RE.match(clean) or ".." in clean or clean.lower().endswith(".json"):
        raise ThresholdSetError(
            f"'{name}' is not a usable threshold-set name; use 1-64 letters, digits, spaces, "
            "'_', '-' or '.', starting with a letter or digit (no '/', '..' or '.json')"
        )
    if clean.lower() in (CARD_SET, "active", HISTORY_DIR):
        raise ThresholdSetError(
            f"'{clean}' is a reserved name; choose another name for the threshold set"
        )
    return clean


def validate_thresholds(
    thresholds: Mapping[str, float], classes: Iterable[str]
) -> dict[str, float]:
    """Check every class is known and every value is a probability; keep the model's class order."""
    classes = list(classes)
    unknown = [c for c in thresholds if c not in classes]
    if unknown:
        raise UnknownClassError(
            f"threshold set names classes the model does not predict: {', '.join(map(str, unknown))}; "
            f"the model's classes are: {', '.join(classes)}"
        )
    clean: dict[str, float] = {}
    for cls in classes:
        if cls not in thresholds:
            continue
        try:
            value = float(thresholds[cls])
        except (TypeError, ValueError):
            raise ThresholdSetError(
                f"threshold for '{cls}' is {thresholds[cls]!r}, not a number between 0 and 1"
            ) from None
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ThresholdSetError(
                f"threshold for '{cls}' is {value}; thresholds must lie between 0 and 1"
            )
        clean[cls] = value
    return clean


@dataclass(frozen=True)
class ReaderChoice:
    """One reader's stored choice: the set they read with ("" follows the model's default) and how
    many entries of the default-change log they have acknowledged."""

    reader: str
    set_name: str = ""
    seen: int = 0


def reader_key(reader: str) -> str:
    """A reader name as stored: whitespace collapsed; an empty name cannot hold a choice."""
    key = " ".join(str(reader).split())
    if not key:
        raise ThresholdSetError("a reader name is needed to keep a threshold-set choice")
    return key


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ThresholdStore:
    """The threshold sets of one checkpoint directory.

    ``classes`` are the model's classes (values for other classes are refused);
    ``card_thresholds`` are the model card's thresholds, served as the set named ``card``.
    ``db``: a database for the sets instead of files (default: ``CXR_REVIEW_DB`` when it is a
    PostgreSQL URL), where they are kept under the checkpoint folder's name.
    """

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        classes: Iterable[str],
        card_thresholds: Mapping[str, float] | None = None,
        *,
        db: str | None = None,
    ) -> None:
        self.checkpoint_dir = Path(checkpoint_dir)
        self.folder = RunDir(self.checkpoint_dir).thresholds
        env = os.environ.get("CXR_REVIEW_DB", "").strip()
        db = db if db is not None else (env if is_database_url(env) else None)
        self._tables = (
            ThresholdTables(db, self.checkpoint_dir.resolve().name) if db is not None else None
        )
        self.classes = tuple(classes)
        card = {c: float(v) for c, v in (card_thresholds or {}).items() if c in self.classes}
        self._card = ThresholdSet(
            CARD_SET,
            {c: card.get(c, 0.5) for c in self.classes},
            method="model card",
            notes="chosen on the validation split at training time",
        )
        self.actor: Actor = operator()
        self.audit: AuditLog | None = None

    def acting(self, actor: Actor, audit: AuditLog | None = None) -> ThresholdStore:
        """This store acting for ``actor`` (role checked on every change), auditing to ``audit``."""
        bound = copy.copy(self)
        bound.actor, bound.audit = actor, audit
        return bound

    def _audit(self, action: str, name: str, detail: Mapping[str, object]) -> None:
        if self.audit is not None:
            self.audit.record(
                self.actor, action, target=f"{self.checkpoint_dir.name}/{name}", detail=detail
            )

    def _path(self, name: str) -> Path:
        return self.folder / f"{validate_name(name)}.json"

    def names(self) -> list[str]:
        """Saved set names (sorted), preceded by the model card's set."""
        if self._tables is not None:
            return [CARD_SET, *self._tables.names()]
        saved = sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []
        return [CARD_SET, *saved]

    def load(self, name: str) -> ThresholdSet:
        """A saved set; classes missing from an older file fall back to the card's values."""
        if name == CARD_SET:
            return self._card
        data = self._read(name)
        try:
            values = data["thresholds"]
        except (KeyError, TypeError) as exc:
            raise ThresholdSetError(
                f"threshold set '{name}' is unreadable (no {exc}); delete or fix it"
            ) from None
        return self._from_data(name, data, values)

    def _read(self, name: str) -> dict:
        """The saved JSON of a set, from its file or its row."""
        where = self._tables.where if self._tables is not None else self.folder
        data = self._tables.read(validate_name(name)) if self._tables is not None else None
        path = self._path(name)
        if self._tables is None and path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ThresholdSetError(
                    f"threshold set file {path} is unreadable ({exc}); delete or fix it"
                ) from None
        if data is None:
            raise ThresholdSetError(
                f"no threshold set named '{name}' in {where}; saved sets: {', '.join(self.names())}"
            )
        return data

    def _from_data(self, name: str, data: dict, values: Mapping[str, float]) -> ThresholdSet:
        merged = {**self._card.thresholds, **validate_thresholds(values, self.classes)}
        return ThresholdSet(
            str(data.get("name", name)),
            merged,
            str(data.get("method", "")),
            str(data.get("notes", "")),
            str(data.get("created", "")),
            dict(data.get("extra", {})),
        )

    def save(
        self,
        name: str,
        thresholds: Mapping[str, float],
        *,
        method: str = "",
        notes: str = "",
        extra: Mapping | None = None,
    ) -> ThresholdSet:
        """Save a set; an existing set of that name is first moved to ``history/``."""
        self.actor.require(roles.SAVE_THRESHOLDS)
        clean_name = validate_name(name)
        values = validate_thresholds(thresholds, self.classes)
        missing = [c for c in self.classes if c not in values]
        if missing:
            raise ThresholdSetError(
                f"threshold set '{clean_name}' lacks values for: {', '.join(missing)}"
            )
        new = ThresholdSet(clean_name, values, method, notes, _now(), dict(extra or {}))
        if self._tables is not None:
            self._tables.write(clean_name, new.to_dict())
        else:
            path = self._path(clean_name)
            with self._locked():
                if path.is_file():
                    self._keep_previous(path)
                write_text_atomically(path, json.dumps(new.to_dict(), indent=2))
        self._audit(audit_log.THRESHOLDS_SAVED, clean_name, {"method": method})
        return new

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(self.folder / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _keep_previous(self, path: Path) -> None:
        history = self.folder / HISTORY_DIR
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        target = history / f"{path.stem}.{stamp}-{uuid.uuid4().hex[:6]}.json"
        write_text_atomically(target, path.read_text(encoding="utf-8"))

    def history(self, name: str) -> list[Path]:
        """Earlier versions of a set (files), oldest first; :meth:`versions` reads them anywhere."""
        clean = validate_name(name)
        if self._tables is not None:
            raise ThresholdSetError(
                f"threshold sets are kept in {self._tables.where}, not in files: read their earlier "
                "versions with versions()"
            )
        folder = self.folder / HISTORY_DIR
        return sorted(folder.glob(f"{clean}.[0-9]*Z-*.json")) if folder.is_dir() else []

    def versions(self, name: str) -> list[ThresholdSet]:
        """Every earlier version of a set that a save replaced, oldest first."""
        if self._tables is not None:
            found = self._tables.versions(validate_name(name))
        else:
            found = [json.loads(p.read_text(encoding="utf-8")) for p in self.history(name)]
        return [self._from_data(name, data, data.get("thresholds", {})) for data in found]

    def active_name(self) -> str:
        """Name of the active set; ``card`` when none was chosen or the chosen one is gone."""
        if self._tables is not None:
            name = self._tables.active()
            return name if name is not None and name in self.names() else CARD_SET
        path = self.folder / ACTIVE_FILE
        if not path.is_file():
            return CARD_SET
        name = path.read_text(encoding="utf-8").strip()
        return name if name in self.names() else CARD_SET

    def active(self) -> ThresholdSet:
        return self.load(self.active_name())

    def set_active(self, name: str, *, by: str = "") -> dict:
        """Make ``name`` the model's default set and append who did it to the audit log; returns the entry.

        ``by`` is who did it: a signed-in actor's own name (asking for another is refused), else
        ``by`` as given, or the actor's name.
        """
        self.actor.require(roles.SET_DEFAULT_THRESHOLDS)
        by = self.actor.as_self(by, "a change of the default threshold set") or self.actor.name
        if name != CARD_SET and name not in self.names():
            raise ThresholdSetError(
                f"cannot activate '{name}': no such threshold set in "
                f"{self._tables.where if self._tables is not None else self.folder}"
            )
        if self._tables is not None:
            entry = self._tables.activate(name, " ".join(str(by).split()), CARD_SET)
        else:
            entry = self._activate_file(name, by)
        self._audit(audit_log.THRESHOLDS_DEFAULT, name, {"from": entry["from"], "to": name})
        return entry

    def _activate_file(self, name: str, by: str) -> dict:
        with self._locked():
            entry = {
                "when": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "by": " ".join(str(by).split()),
                "from": self.active_name(),
                "to": name,
            }
            write_text_atomically(self.folder / ACTIVE_FILE, name + "\n")
            with open(self.folder / AUDIT_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        return entry

    def activations(self) -> list[dict]:
        """The audit log of default-set changes, oldest first (unreadable lines are skipped)."""
        if self._tables is not None:
            return self._tables.activations()
        path = self.folder / AUDIT_FILE
        if not path.is_file():
            return []
        entries = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                entries.append({k: str(item.get(k, "")) for k in ("when", "by", "from", "to")})
        return entries

    def _readers(self) -> dict[str, dict]:
        path = self.folder / READERS_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except (OSError, ValueError):
            return {}  # a damaged file forgets choices (everyone follows the default), never crashes
        return data if isinstance(data, dict) else {}

    def reader_choice(self, reader: str) -> ReaderChoice | None:
        """The stored choice of ``reader``, or None for a reader this checkpoint has not seen."""
        key = reader_key(reader)
        item = self._tables.reader(key) if self._tables is not None else self._readers().get(key)
        if not isinstance(item, dict):
            return None
        name = str(item.get("set", ""))
        seen = item.get("seen", 0)
        return ReaderChoice(
            reader_key(reader),
            name if name in self.names() else "",
            seen if isinstance(seen, int) and seen >= 0 else 0,
        )

    def _update_reader(self, reader: str, **changes: object) -> ReaderChoice:
        key = reader_key(reader)
        if self._tables is not None:
            item = self._tables.update_reader(key, changes)
            return ReaderChoice(key, item["set"], item["seen"])
        with self._locked():
            readers = self._readers()
            item = readers.get(key) if isinstance(readers.get(key), dict) else None
            item = {"set": "", "seen": len(self.activations()), **(item or {}), **changes}
            readers[key] = {**item, "updated": _now()}
            write_text_atomically(
                self.folder / READERS_FILE, json.dumps(readers, indent=2, sort_keys=True)
            )
        return ReaderChoice(key, str(item["set"]), int(item["seen"]))

    def choose(self, reader: str, name: str | None) -> ReaderChoice:
        """Keep ``name`` as the set ``reader`` reads with (None or "": follow the model's default)."""
        if name and name not in self.names():
            raise ThresholdSetError(
                f"no threshold set named '{name}' in {self.folder}; saved sets: {', '.join(self.names())}"
            )
        return self._update_reader(reader, set=name or "")

    def acknowledge(self, reader: str) -> ReaderChoice:
        """Record that ``reader`` has seen every default change so far (first visit: the current default)."""
        return self._update_reader(reader, seen=len(self.activations()))

    def unseen_changes(self, reader: str) -> list[dict]:
        """Default changes (audit-log entries, oldest first) made since ``reader`` last acknowledged;
        none for a reader never seen before (they start from the current default)."""
        choice = self.reader_choice(reader)
        return [] if choice is None else self.activations()[choice.seen :]

    def compare(self, first: str, second: str) -> pd.DataFrame:
        """One row per class: both thresholds and their difference (second - first)."""
        a, b = self.load(first), self.load(second)
        frame = pd.DataFrame(
            {
                "class": list(self.classes),
                first: [a.thresholds[c] for c in self.classes],
                second if second != first else f"{second} (2)": [
                    b.thresholds[c] for c in self.classes
                ],
            }
        )
        frame["difference"] = frame.iloc[:, 2] - frame.iloc[:, 1]
        return frame
