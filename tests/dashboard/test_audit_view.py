"""The audit log as the admin page shows it: every action in words, readable details, the columns
an admin scans first on the first screen; exports keep the codes."""

from __future__ import annotations

from cxr_core.artifacts import audit_log
from cxr_core.artifacts.audit_log import AuditEntry
from dashboard import audit_view


def test_every_action_the_log_records_has_words() -> None:
    assert set(audit_view.ACTION_WORDS) == set(audit_log.ACTIONS)
    words = list(audit_view.ACTION_WORDS.values())
    assert len(set(words)) == len(words)  # no two actions read the same
    assert all("_" not in w for w in words)


def test_the_table_reads_in_words_with_who_and_what_first() -> None:
    entries = [
        AuditEntry(
            2, "2026-12-07T21:08:43.120+00:00", "ada@example.org", "admin", "oidc",
            "127.0.0.1", audit_log.THRESHOLDS_DEFAULT, target="tiny_a/screening",
            detail={"from": "card", "to": "screening"},
        ),
        AuditEntry(
            1, "2026-12-07T21:08:02.000+00:00", "root", "admin", "cli", "",
            audit_log.USER_ADDED, target="alice", detail={"local_account": False, "role": "reader"},
        ),
    ]  # fmt: skip
    frame = audit_view.audit_frame(entries)
    assert list(frame.columns[:4]) == ["time (UTC)", "user", "what", "concerning"]
    assert frame.to_dict("records") == [
        {
            "time (UTC)": "2026-12-07 21:08:43",
            "user": "ada@example.org",
            "what": "made a threshold set the default",
            "concerning": "tiny_a/screening",
            "film": "",
            "details": "from: card, to: screening",
            "role": "admin",
            "via": "single sign-on",
            "from": "127.0.0.1",
        },
        {
            "time (UTC)": "2026-12-07 21:08:02",
            "user": "root",
            "what": "added a user",
            "concerning": "alice",
            "film": "",
            "details": "local account: no, role: reader",
            "role": "admin",
            "via": "command line",
            "from": "",
        },
    ]
    assert audit_view.audit_frame([]).columns.tolist() == list(audit_view.COLUMNS)
