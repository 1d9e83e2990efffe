"""One reader at one film of a review session: their calls as they stand, changing them, saving them.

A reader's call on a finding stands as their unsaved draft when they have one, else as their saved
verdict. Every change is kept as a draft at once (:meth:`ReviewStore.save_draft`), so moving to
another film, a reload, closing the browser or a server restart loses nothing; a change that brings
a finding back to what was saved discards its draft, so "unsaved" always means "differs from the
saved verdict". Saving the film stores every changed, called finding as a verdict in one
transaction, with the verdict on the model that the call implies (:func:`verdict_for`).

Drafts are never verdicts: the session's agreement, export, corrected labels and each reader's
progress read verdicts only (see :mod:`cxr_core.artifacts.review_store`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace

import pandas as pd

from cxr_core.artifacts.review_store import Call, Draft, ReviewStore, Verdict
from cxr_core.errors import ReviewStoreError
from cxr_core.evaluation.review import verdict_for

EDITABLE = ("finding", "confidence", "reason", "note")
"""What a reader changes from the call grid; where (point, box) is changed on the film."""


def _as_call(class_name: str, source: Verdict | Draft | None) -> Call:
    if source is None:
        return Call(class_name)
    return Call(
        class_name,
        source.finding,
        None,
        source.confidence,
        source.reason,
        source.note,
        source.point,
        source.box,
    )


@dataclass(frozen=True)
class FindingCall:
    """One finding of a film as its reader sees it: what they saved, and their unsaved change if any."""

    class_name: str
    saved: Verdict | None = None
    draft: Draft | None = None
    frozen: bool = False
    """The reader may not save a call here: they revealed a blinded session before calling it."""

    @property
    def call(self) -> Call:
        """The call as it stands: the draft when there is one, else the saved verdict."""
        return _as_call(self.class_name, self.draft if self.draft is not None else self.saved)

    @property
    def unsaved(self) -> bool:
        return self.draft is not None


def film_calls(
    classes: Sequence[str],
    verdicts: Iterable[Verdict],
    drafts: Iterable[Draft],
    image_id: str,
    *,
    revealed: bool = False,
) -> list[FindingCall]:
    """The film's findings in ``classes`` order, from one reader's verdicts and drafts (any films)."""
    saved = {v.class_name: v for v in verdicts if v.image_id == image_id}
    drafted = {d.class_name: d for d in drafts if d.image_id == image_id}
    return [
        FindingCall(c, saved.get(c), drafted.get(c), frozen=revealed and c not in saved)
        for c in classes
    ]


def _same(call: Call, saved: Verdict | None) -> bool:
    """True when ``call`` says exactly what the saved verdict says (its verdict on the model aside)."""
    return _fields(call) == _fields(_as_call(call.class_name, saved))


def _fields(call: Call) -> tuple:
    return tuple(getattr(call, f.name) for f in fields(Call) if f.name != "verdict")


def change(
    store: ReviewStore,
    session_id: int,
    image_id: str,
    reader: str,
    current: FindingCall,
    /,
    **changes: object,
) -> FindingCall:
    """Apply ``changes`` (Call fields) to one finding's call and keep the result as the reader's draft;
    back to what was saved, the draft is discarded. Frozen findings refuse every change."""
    if current.frozen:
        raise ReviewStoreError(
            f"{current.class_name} cannot be called any more: you revealed this blinded session "
            "before calling it"
        )
    updated = replace(current.call, **changes)
    if updated == current.call:
        return current
    if _same(updated, current.saved):
        store.discard_draft(session_id, image_id, current.class_name, reader)
        return replace(current, draft=None)
    return replace(current, draft=store.save_draft(session_id, image_id, reader, updated))


def apply_edits(
    store: ReviewStore,
    session_id: int,
    image_id: str,
    reader: str,
    film: Sequence[FindingCall],
    edits: Mapping[str, Mapping],
) -> list[FindingCall]:
    """Apply the call grid's edits ({finding: {field: value}}, fields from :data:`EDITABLE`) to a film.

    Edits of findings that are not on the film, and fields other than :data:`EDITABLE`, are
    ignored (they come from a browser); bad values are refused by the store with a clear message.
    """
    out = []
    for finding in film:
        wanted = edits.get(finding.class_name)
        if not isinstance(wanted, Mapping):
            out.append(finding)
            continue
        fixes = {k: wanted[k] for k in EDITABLE if k in wanted}
        fixes |= {k: str(fixes[k] or "") for k in ("reason", "note") if k in fixes}
        out.append(change(store, session_id, image_id, reader, finding, **fixes))
    return out


@dataclass(frozen=True)
class SaveResult:
    """What saving a film did: findings saved now, findings still without a call, findings it may not save."""

    saved: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """Every finding the reader may call on this film has a saved call."""
        return not self.missing

    def message(self) -> str:
        """What the reader needs to know ('' when the film is complete and nothing was held back)."""
        parts = []
        if self.missing:
            parts.append(
                (f"Saved {len(self.saved)} call(s); still" if self.saved else "Nothing saved:")
                + f" to call on this film: {', '.join(self.missing)}."
            )
        if self.frozen:
            parts.append(
                f"Not saved ({', '.join(self.frozen)}): you revealed this blinded session before "
                "calling them, so calls on them would not be blinded."
            )
        return " ".join(parts)


def save_film(
    store: ReviewStore,
    session_id: int,
    image_id: str,
    reader: str,
    film: Sequence[FindingCall],
    cases: pd.DataFrame,
) -> SaveResult:
    """Save every changed, called finding of the film as a verdict (one transaction), its verdict on the
    model taken from ``cases`` (the film's rows of :func:`film_cases`: label and model call)."""
    case = {r.class_name: r for r in cases.itertuples(index=False)}
    calls, missing, frozen = [], [], []
    for finding in film:
        call = finding.call
        if finding.frozen:
            if finding.unsaved:
                frozen.append(finding.class_name)
            continue
        if call.finding is None:
            missing.append(finding.class_name)
            continue
        if finding.unsaved:
            row = case[finding.class_name]
            verdict = verdict_for(call.finding, row.label, bool(row.model_positive))
            calls.append(replace(call, verdict=verdict))
    if calls:
        store.save_film(session_id, image_id, reader, calls)
    return SaveResult(tuple(c.class_name for c in calls), tuple(missing), tuple(frozen))


def draft_films(drafts: Iterable[Draft]) -> set[str]:
    """Films on which the reader has unsaved calls."""
    return {d.image_id for d in drafts}


__all__ = [
    "EDITABLE",
    "FindingCall",
    "SaveResult",
    "apply_edits",
    "change",
    "draft_films",
    "film_calls",
    "save_film",
]
