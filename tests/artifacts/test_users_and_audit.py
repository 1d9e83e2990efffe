"""Users and the audit log in the review database: roles checked, every change audited, nothing rewritten."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from cxr_core.access.pseudonym import Pseudonymiser
from cxr_core.access.roles import Actor
from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.errors import AccessDeniedError, SignInError
from cxr_core.utils.csv_safe import read_table

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> ReviewStore:
    """The review database on each engine (``[sqlite]``, ``[postgres]`` in the test's name)."""
    if request.param == "postgres":
        return ReviewStore(request.getfixturevalue("postgres_db"))
    return ReviewStore(tmp_path / "db")


def _query(store: ReviewStore, sql: str) -> list[tuple]:
    """Rows read straight from the database, past the store."""
    if store.folder is None:
        import psycopg

        with psycopg.connect(store.target) as conn:
            return conn.execute(sql).fetchall()
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql).fetchall()


def test_users_are_added_listed_changed_and_removed_with_each_change_audited(store) -> None:
    admin = store.actor
    store.users.add(admin, "Root Admin", "admin")
    store.users.add(admin, "Alice", "reader", PASSWORD)
    store.users.set_role(admin, "alice", "adjudicator")
    store.users.set_password(admin, "ALICE", "another long password")
    listed = {u.name: (u.role, u.has_password) for u in store.users.list()}
    assert listed == {"Alice": ("adjudicator", True), "Root Admin": ("admin", False)}
    store.users.remove(admin, "Alice")
    assert store.users.get("alice") is None
    actions = [(e.action, e.target, e.detail) for e in reversed(store.audit.entries())]
    assert actions == [
        ("user_added", "Root Admin", {"role": "admin", "local_account": False}),
        ("user_added", "Alice", {"role": "reader", "local_account": True}),
        ("user_role", "Alice", {"from": "reader", "to": "adjudicator"}),
        ("user_password", "Alice", {}),
        ("user_removed", "Alice", {"role": "adjudicator"}),
    ]
    assert all(e.actor == admin.name and e.via == "cli" for e in store.audit.entries())


def test_names_are_unique_regardless_of_case(store) -> None:
    store.users.add(store.actor, "alice@example.org", "reader")
    with pytest.raises(AccessDeniedError, match="already a user named Alice@Example.org"):
        store.users.add(store.actor, "Alice@Example.org", "viewer")


def test_only_admins_manage_users_and_the_last_admin_stays(store) -> None:
    store.users.add(store.actor, "boss", "admin")
    reader = Actor("rita", "reader", "password")
    with pytest.raises(
        AccessDeniedError, match=r"rita \(reader\) may not add, remove or change users"
    ):
        store.users.add(reader, "mallory", "admin")
    with pytest.raises(AccessDeniedError, match="only admin"):
        store.users.remove(store.actor, "boss")
    with pytest.raises(AccessDeniedError, match="only admin"):
        store.users.set_role(store.actor, "boss", "reader")
    store.users.add(store.actor, "deputy", "admin")
    store.users.set_role(store.actor, "boss", "reader")  # another admin remains


def test_a_signed_in_user_may_change_their_own_password_only(store) -> None:
    store.users.add(store.actor, "rita", "reader", PASSWORD)
    store.users.add(store.actor, "sam", "reader", PASSWORD)
    rita = store.users.sign_in("rita", PASSWORD)
    store.users.set_password(rita, "rita", "a brand new password")
    assert store.users.sign_in("rita", "a brand new password").name == "rita"
    with pytest.raises(AccessDeniedError):
        store.users.set_password(rita, "sam", "a brand new password")


def test_sign_in_is_audited_and_locks_a_name_after_repeated_failures(store) -> None:
    store.users.add(store.actor, "rita", "reader", PASSWORD)
    actor = store.users.sign_in(" Rita ", PASSWORD, client="192.0.2.7")
    assert (actor.name, actor.role, actor.via, actor.client) == (
        "rita",
        "reader",
        "password",
        "192.0.2.7",
    )
    for _ in range(3):
        with pytest.raises(SignInError, match="^wrong name or password$"):
            store.users.sign_in("rita", "wrong password!", max_failed=3)
    with pytest.raises(SignInError, match="too many failed sign-ins for rita"):
        store.users.sign_in("rita", PASSWORD, max_failed=3)
    with pytest.raises(SignInError, match="^wrong name or password$"):  # nobody: same answer
        store.users.sign_in("nobody", PASSWORD)
    actions = [e.action for e in reversed(store.audit.entries())][1:]
    assert actions == [
        "sign_in",
        "sign_in_failed",
        "sign_in_failed",
        "sign_in_failed",
        "sign_in_refused",
        "sign_in_failed",
    ]
    assert store.audit.entries(action="sign_in")[0].client == "192.0.2.7"


def test_users_vouched_for_elsewhere_get_their_listed_role_or_the_default(store) -> None:
    store.users.add(store.actor, "alice@example.org", "adjudicator")
    assert store.users.actor_for("Alice@example.org", "oidc").role == "adjudicator"
    assert store.users.actor_for("bob@example.org", "proxy", default_role="viewer").role == "viewer"
    with pytest.raises(SignInError, match="has no role on this server; ask an admin"):
        store.users.actor_for("eve@example.org", "oidc")
    refused = store.audit.entries(action="sign_in_refused")[0]
    assert (refused.actor, refused.detail) == ("eve@example.org", {"why": "no role", "via": "oidc"})


def test_the_audit_log_cannot_be_rewritten(store) -> None:
    """The engine itself refuses changing or removing a row, whoever connects (SQLite triggers;
    PostgreSQL triggers, emptying the table included)."""
    store.audit.record(store.actor, "film_viewed", film="00000001_000.png")
    attempts = ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"]
    if store.folder is None:
        import psycopg

        attempts.append("TRUNCATE audit_log")
        connect, refused = psycopg.connect, psycopg.errors.IntegrityConstraintViolation
    else:
        connect, refused = sqlite3.connect, sqlite3.DatabaseError
    for statement in attempts:
        with connect(str(store.target if store.folder is None else store.path)) as conn:
            with pytest.raises(refused, match="append-only"):
                conn.execute(statement)
    store.audit.record(store.actor, "film_viewed", film="00000002_000.png")
    assert [e.film for e in store.audit.entries()] == ["00000002_000.png", "00000001_000.png"]


def test_audit_export_pseudonymises_films_by_default(store, tmp_path) -> None:
    store.audit.record(
        store.actor, "film_viewed", film="00000001_000.png", detail={"page": "Predict"}
    )
    pseudo = Pseudonymiser.for_install(tmp_path / "key")
    assert store.audit.export(store.actor, tmp_path / "a.csv", pseudonymiser=pseudo) == 1
    table = read_table(tmp_path / "a.csv")
    assert table["film"].tolist() == [pseudo.pseudonym("00000001_000.png")]
    assert json.loads(table["detail"][0]) == {"page": "Predict"}
    store.audit.export(store.actor, tmp_path / "a.jsonl", pseudonymiser=None, fmt="jsonl")
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines[0]["film"] == "00000001_000.png" and lines[1]["action"] == "audit_exported"
    reader = Actor("rita", "reader", "password")
    with pytest.raises(AccessDeniedError, match="read the audit log"):
        store.audit.export(reader, tmp_path / "b.csv", pseudonymiser=pseudo)


def test_no_password_or_hash_reaches_the_log_or_the_audit(store, caplog) -> None:
    with caplog.at_level(logging.DEBUG):
        store.users.add(store.actor, "rita", "reader", PASSWORD)
        store.users.sign_in("rita", PASSWORD)
        with pytest.raises(SignInError):
            store.users.sign_in("rita", "wrong password here")
    stored_hash = _query(store, "SELECT password_hash FROM users")[0][0]
    audit_text = json.dumps([list(r) for r in _query(store, "SELECT * FROM audit_log")])
    for secret in (PASSWORD, "wrong password here", stored_hash, stored_hash.split("$")[-1]):
        assert secret not in caplog.text and secret not in audit_text
    assert stored_hash not in repr(store.users.list())
