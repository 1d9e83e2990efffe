"""Users: who may sign in and with which role (admins only). Every change is checked by the user
store against the signed-in user's role and written to the audit log."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cxr_core.access import roles
from cxr_core.errors import CXRError
from dashboard import state
from dashboard.tables import human_date, table_height
from dashboard.widgets import cxr_errors

MESSAGE = "users_message"

st.title("Users")
actor = state.actor()
actor.require(roles.MANAGE_USERS)
users = state.users()
config = state.auth_config()
st.caption(
    f"Sign-in mode: **{config.mode}**"
    + (f" (from {config.source})" if config.source else " (no sign-in settings: a local install)")
    + ". Users of single sign-on or a sign-in proxy are added without a password, under the name "
    "their provider sends (usually their e-mail address)"
    + (
        f"; anyone else it vouches for gets the role **{config.default_role}**."
        if config.default_role
        else "."
    )
)
if MESSAGE in st.session_state:
    kind, text = st.session_state.pop(MESSAGE)
    (st.success if kind == "ok" else st.error)(text)

listed = users.list()
frame = pd.DataFrame(
    [
        {
            "name": u.name,
            "role": u.role,
            "signs in with": "password" if u.has_password else "single sign-on / proxy",
            "added": human_date(u.created),
        }
        for u in listed
    ],
    columns=["name", "role", "signs in with", "added"],
)
st.dataframe(frame, hide_index=True, key="users_table", height=table_height(max(len(frame), 1)))


def _add() -> None:
    with cxr_errors():
        password = st.session_state["users_new_password"] or None
        user = users.add(
            actor, st.session_state["users_new_name"], st.session_state["users_new_role"], password
        )
        st.session_state[MESSAGE] = ("ok", f"Added {user.name} as {user.role}.")
    st.session_state["users_new_name"] = st.session_state["users_new_password"] = ""


def _change(action: str) -> None:
    name = st.session_state.get("users_pick")
    try:
        if action == "role":
            user = users.set_role(actor, name, st.session_state["users_pick_role"])
            text = f"{user.name} is now {user.role}."
        elif action == "password":
            users.set_password(actor, name, st.session_state["users_pick_password"])
            text = f"Changed the password of {name}."
        else:
            users.remove(actor, name)
            text = f"Removed {name}; their calls and history stay."
        st.session_state[MESSAGE] = ("ok", text)
    except CXRError as exc:  # refused or invalid: said on the page, which keeps running
        st.session_state[MESSAGE] = ("error", str(exc))
    st.session_state["users_pick_password"] = ""


left, right = st.columns(2, gap="large")
with left, st.container(border=True):
    st.subheader("Add a user")
    st.text_input("Name", key="users_new_name", placeholder="login name or e-mail address")
    st.selectbox("Role", roles.ROLES, index=1, key="users_new_role")
    st.text_input(
        "Password (local accounts only)",
        type="password",
        key="users_new_password",
        help="Leave empty for a user who signs in through single sign-on or the sign-in proxy.",
    )
    st.button("Add user", key="users_add", on_click=_add, type="primary")
with right, st.container(border=True):
    st.subheader("Change a user")
    if listed:
        st.selectbox("User", [u.name for u in listed], key="users_pick")
        st.selectbox("New role", roles.ROLES, key="users_pick_role")
        st.button("Change role", key="users_set_role", on_click=_change, args=("role",))
        st.text_input("New password", type="password", key="users_pick_password")
        st.button("Set password", key="users_set_password", on_click=_change, args=("password",))
        st.button("Remove user", key="users_remove", on_click=_change, args=("remove",))
    else:
        st.info("No users yet. Add the first admin here or with `cxr users add NAME --role admin`.")

with st.expander("What each role may do"):
    table = pd.DataFrame(roles.role_table())
    st.dataframe(table, hide_index=True, key="users_roles", height=table_height(len(table)))
