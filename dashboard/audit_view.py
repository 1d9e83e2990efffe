"""The audit log as an admin reads it on the page: each event in plain words, the columns an admin
scans first (when, who, what, concerning what) on the first screen, how and from where last.

The stored log and its exports (``cxr audit export``, the page's download) keep the action codes;
only the page speaks in words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd
import streamlit as st

from cxr_core.artifacts import audit_log
from cxr_core.artifacts.audit_log import AuditEntry
from dashboard.auth import VIA_WORDS

ACTION_WORDS: dict[str, str] = {
    audit_log.SIGN_IN: "signed in",
    audit_log.SIGN_IN_FAILED: "sign-in failed",
    audit_log.SIGN_IN_REFUSED: "sign-in refused",
    audit_log.SIGN_OUT: "signed out",
    audit_log.FILM_VIEWED: "viewed a film",
    audit_log.CALL_SAVED: "saved a call",
    audit_log.REVEAL: "revealed labels and model",
    audit_log.ADJUDICATE: "adjudicated",
    audit_log.EXPORT: "exported",
    audit_log.SESSION_CREATED: "started a review session",
    audit_log.SESSION_CHANGED: "changed a review session",
    audit_log.THRESHOLDS_SAVED: "saved a threshold set",
    audit_log.THRESHOLDS_DEFAULT: "made a threshold set the default",
    audit_log.USER_ADDED: "added a user",
    audit_log.USER_REMOVED: "removed a user",
    audit_log.USER_ROLE: "changed a user's role",
    audit_log.USER_PASSWORD: "changed a password",
    audit_log.AUDIT_EXPORTED: "exported the audit log",
}
COLUMNS = ("time (UTC)", "user", "what", "concerning", "film", "details", "role", "via", "from")


def action_words(action: str) -> str:
    """An action code in plain words (the code itself for one this page does not know)."""
    return ACTION_WORDS.get(action, action)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def detail_text(detail: Mapping[str, object]) -> str:
    """An event's details as a reader reads them: ``local account: no, role: reader``."""
    return ", ".join(f"{key.replace('_', ' ')}: {_value(value)}" for key, value in detail.items())


def audit_frame(entries: Iterable[AuditEntry]) -> pd.DataFrame:
    """The page's table of ``entries`` (newest first, as given), one row per event."""
    rows = [
        {
            "time (UTC)": e.time[:19].replace("T", " "),
            "user": e.actor,
            "what": action_words(e.action),
            "concerning": e.target,
            "film": e.film,
            "details": detail_text(e.detail),
            "role": e.role,
            "via": VIA_WORDS.get(e.via, e.via),
            "from": e.client,
        }
        for e in entries
    ]
    return pd.DataFrame(rows, columns=list(COLUMNS))


COLUMN_CONFIG = {"time (UTC)": st.column_config.TextColumn(pinned=True)}
"""The time stays in view when the table scrolls sideways (a 1,024 px screen)."""
