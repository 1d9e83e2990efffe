"""Audit log (admins only): who signed in, viewed which film, called, revealed, exported, changed
thresholds or users, when and from where; newest first, with a pseudonymised download."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from cxr_core.access import roles
from cxr_core.artifacts import audit_log
from dashboard import audit_view, state
from dashboard.tables import table_height

SHOWN = 500

st.title("Audit log")
actor = state.actor()
log = state.audit_log()
c1, c2, c3 = st.columns([2, 2, 2])
since = c1.date_input("Since", value=date.today() - timedelta(days=7), key="audit_since")
action = c2.selectbox(
    "Action",
    ["", *audit_log.ACTIONS],
    key="audit_action",
    format_func=lambda a: audit_view.action_words(a) if a else "every action",
)
user = c3.text_input("User", key="audit_user", placeholder="every user")
entries = log.read(
    actor, since=since.isoformat(), user=user.strip() or None, action=action or None, limit=SHOWN
)
frame = audit_view.audit_frame(entries)
st.caption(
    f"{len(frame)} event(s) since {since:%d %b %Y}"
    + (f" (the latest {SHOWN})" if len(frame) == SHOWN else "")
    + ", newest first. The log is only ever appended to; `cxr audit export` writes it whole "
    "(with the action codes this table puts in words)."
)
st.dataframe(
    frame,
    hide_index=True,
    key="audit_table",
    height=table_height(min(max(len(frame), 1), 15)),
    column_config=audit_view.COLUMN_CONFIG,
)

identifiable = st.toggle(
    "Keep film identifiers in the download",
    key="audit_identifiable",
    disabled=not actor.may(roles.VIEW_PATIENT_DATA),
    help="Off: each film is replaced by this install's pseudonym (the same film, the same pseudonym).",
)


def _download() -> str:
    pseudonymiser = None if identifiable else state.review_store().pseudonymiser()
    text, _ = log.export_text(
        actor, pseudonymiser=pseudonymiser, since=since.isoformat(), where="a dashboard download"
    )
    return text


st.download_button(
    "Download the log since then (CSV)",
    _download,
    file_name=f"cxr_audit_since_{since.isoformat()}.csv",
    mime="text/csv",
    key="audit_download",
    icon=":material/download:",
)
