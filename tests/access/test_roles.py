"""The role table: each role allows exactly its own actions and those of the roles below it."""

from __future__ import annotations

import pytest

from cxr_core.access import roles
from cxr_core.access.roles import Actor, local_user, operator
from cxr_core.errors import AccessDeniedError

EXPECTED = {  # the table in the README's "Deploy for a team", written out by hand
    "viewer": {"view"},
    "reader": {"view", "save_thresholds", "call", "reveal"},
    "adjudicator": {
        "view",
        "save_thresholds",
        "call",
        "reveal",
        "view_patient_data",
        "create_session",
        "adjudicate",
        "export",
    },
    "admin": set(roles.ACTIONS),
}


@pytest.mark.parametrize("role", roles.ROLES)
def test_each_role_allows_exactly_its_actions(role: str) -> None:
    allowed = {a for a in roles.ACTIONS if Actor("x", role, "oidc").may(a)}
    assert allowed == EXPECTED[role]


def test_a_refusal_names_the_action_the_role_and_who_may() -> None:
    with pytest.raises(AccessDeniedError) as refused:
        Actor("bea", "reader", "password").require(roles.ADJUDICATE)
    assert str(refused.value) == (
        "bea (reader) may not adjudicate disagreements: that needs the role adjudicator or admin; "
        "ask an admin to change your role"
    )


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(
        AccessDeniedError, match="the roles are: viewer, reader, adjudicator, admin"
    ):
        Actor("x", "superuser", "oidc")


def test_a_identified_user_works_under_their_own_name_only() -> None:
    alice = Actor("Alice", "admin", "oidc")
    assert alice.as_self("", "a call") == "Alice"
    assert alice.as_self("  alice ", "a call") == "Alice"
    with pytest.raises(
        AccessDeniedError, match="signed in as Alice; a call is saved under your own"
    ):
        alice.as_self("Bob", "a call")


def test_the_local_user_and_the_operator_may_name_any_reader() -> None:
    assert local_user("  Dr  A ").as_self("Bob", "a call") == "Bob"
    assert local_user().role == operator().role == "admin"
    assert not local_user().identified and not operator().identified
    assert operator("ops").name == "ops" and operator().via == "cli"


def test_the_role_table_rows_match_the_actions() -> None:
    table = roles.role_table()
    assert [row["action"] for row in table] == [words for _, words in roles.ACTIONS.values()]
    by_action = {row["action"]: row for row in table}
    assert by_action["adjudicate disagreements"] == {
        "action": "adjudicate disagreements",
        "viewer": "",
        "reader": "",
        "adjudicator": "yes",
        "admin": "yes",
    }
