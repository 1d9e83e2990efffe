"""Sign-in for the dashboard: who may open it at all, the sign-in page, idle sign-out and signing out.

The router calls :func:`require_user` before anything else, on every run of every page: until
it returns, no page runs, so a visitor who is not signed in gets the sign-in page and nothing
else (no film, no model output, no menu). The sign-in mode is the install's
(:mod:`cxr_core.access.config`):

* ``none``: a single-user local install. Only this computer may connect (a connection from
  another address, or through a proxy, is refused even if someone binds the server to every
  interface); the sidebar says so and the reader types their name.
* ``oidc``: Streamlit's ``st.login`` against the hospital's OpenID Connect provider; the user is
  the claim ``identity_claim`` of their ID token.
* ``local``: our own sign-in form against the local accounts (``cxr users``).
* ``proxy``: a reverse proxy signed the user in and names them in ``proxy_user_header``; only
  connections from ``trusted_proxies`` are believed.

The user's role comes from the users table (or ``default_role``) and is looked up on every run,
so a role change or a removal takes effect at the user's next click. Signing out (the sidebar
button, or ``idle_minutes`` without using the page) clears everything this browser session held
(uploaded films included) and is audited, as are sign-ins and refusals.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from cxr_core.access import roles
from cxr_core.access.config import AuthConfig
from cxr_core.access.roles import Actor, local_user
from cxr_core.artifacts import audit_log
from cxr_core.data.imaging import ImageLimits
from cxr_core.errors import CXRError, SignInError
from dashboard import state

LAST_ACTIVE = "cxr_last_active"  # time.time() of this user's last full page run
SIGN_OUT_NOTE = "cxr_sign_out_note"  # why the session was signed out (shown on the sign-in page)
SIGNED_OUT = "cxr_signed_out"  # proxy mode: signed out here while the proxy still vouches
MIB = 1024 * 1024
VIA_WORDS: dict[str, str] = {
    "oidc": "single sign-on",
    "password": "local account",
    "proxy": "sign-in proxy",
    roles.VIA_LOCAL: "local install",
    roles.VIA_CLI: "command line",
    roles.VIA_CLI_AS: "command line (--as)",
}
"""How a user came in (``Actor.via``), in words."""


def _client() -> tuple[str, dict[str, str]]:
    """(the connection's address, its request headers with lower-case names).

    Streamlit reports a connection from this computer as no address at all.
    """
    headers = {str(k).lower(): str(v) for k, v in st.context.headers.items()}
    address = st.context.ip_address
    return (address if isinstance(address, str) and address else "127.0.0.1"), headers


def server_problems() -> list[str]:
    """What in the running server's settings would make sign-in unsafe (empty when all is well)."""
    problems = []
    if not st.get_option("server.enableXsrfProtection"):
        problems.append(
            "server.enableXsrfProtection is off: forms could be posted from other sites"
        )
    if not st.get_option("server.enableCORS"):
        problems.append("server.enableCORS is off: any web site could talk to this server")
    limit = ImageLimits().max_bytes
    if int(st.get_option("server.maxUploadSize")) * MIB > limit:
        problems.append(
            f"server.maxUploadSize is {st.get_option('server.maxUploadSize')} MB, above the "
            f"{limit // MIB} MB a film may have"
        )
    return problems


def require_user(pages: Sequence[StreamlitPage] = ()) -> Actor:
    """Who this browser session acts as; otherwise the sign-in (or refusal) page, and the run stops.

    ``pages`` are the router's pages: the sign-in page keeps the address asked for (a bookmark of
    the Review page opens the Review page once signed in) without running or listing any of them.
    """
    try:
        config = state.auth_config()
    except CXRError as exc:
        st.error(f"The sign-in settings cannot be used: {exc}", icon=":material/error:")
        st.stop()
    address, headers = _client()
    if not config.accepts_client(address, headers):
        _refuse_client(config, address)
    if not config.signs_in:
        return local_user(state.typed_reader())
    problems = server_problems()
    if problems:
        st.error(
            "Sign-in is configured, but this server is started with unsafe settings: "
            + "; ".join(problems)
            + ". Fix .streamlit/config.toml (see the README, 'Deploy for a team').",
            icon=":material/error:",
        )
        st.stop()
    actor = _current_user(config, address, headers, pages)
    if actor is None:
        _sign_in_page(config, pages)
        st.stop()
    last = st.session_state.get(LAST_ACTIVE)
    if last is not None and config.idle_expired(last, time.time()):
        why = f"signed out after {_duration(config.idle_seconds)} without activity"
        sign_out(config, why, pages)
    st.session_state[LAST_ACTIVE] = time.time()
    return actor


def _duration(seconds: float) -> str:
    """``10 minutes``, ``1 minute`` or, below a minute, ``3 seconds``."""
    if seconds < 60:
        return f"{seconds:.0f} second{'s' if round(seconds) != 1 else ''}"
    minutes = seconds / 60
    return f"{minutes:g} minute{'s' if minutes != 1 else ''}"


def _refuse_client(config: AuthConfig, address: str) -> None:
    if config.mode == "none":
        st.error(
            "This dashboard is a single-user local install: it has no sign-in, so it only serves the "
            f"computer it runs on (127.0.0.1), and never through a proxy. This connection came from "
            f"{address}. To serve a team, configure sign-in (README: 'Deploy for a team').",
            icon=":material/block:",
        )
    else:
        st.error(
            f"This server accepts connections only through its sign-in proxy; {address} is not one. "
            "Open the dashboard at the proxy's address. (Administrators: trusted_proxies in the "
            "sign-in settings; if the proxy runs on this host, start the server with "
            "FORWARDED_ALLOW_IPS='' so that the proxy's own address is the one checked.)",
            icon=":material/block:",
        )
    if not st.session_state.get("cxr_refusal_audited"):
        state.audit_log().record(
            None,
            audit_log.SIGN_IN_REFUSED,
            client=address,
            user="",
            detail={"why": "address not accepted", "mode": config.mode},
        )
        st.session_state["cxr_refusal_audited"] = True
    st.stop()


def _current_user(
    config: AuthConfig, address: str, headers: dict[str, str], pages: Sequence[StreamlitPage]
) -> Actor | None:
    """The signed-in user with their role as it is now, or None when nobody is signed in."""
    users = state.users()
    signed = st.session_state.get(state.ACTOR)
    try:
        if config.mode == "local":
            if not isinstance(signed, Actor):
                return None
            actor = users.actor_for(signed.name, "password", client=address)
        elif config.mode == "oidc":
            actor = _oidc_user(config, address)
        elif st.session_state.get(SIGNED_OUT):
            return None
        else:
            actor = _proxy_user(config, address, headers)
    except SignInError as exc:
        if config.mode == "local":  # the account was removed while signed in
            sign_out(config, "signed out: your account was removed", pages)
        st.session_state.pop(state.ACTOR, None)
        _no_role_page(config, str(exc))
    if actor is None:
        return None
    if not isinstance(signed, Actor) or signed.name != actor.name:
        state.audit_log().record(actor, audit_log.SIGN_IN, target=actor.name.casefold())
    st.session_state[state.ACTOR] = actor
    return actor


def _oidc_user(config: AuthConfig, address: str) -> Actor | None:
    if not st.user.is_logged_in:
        return None
    name = st.user.get(config.identity_claim)
    if not name:
        raise SignInError(
            f"your identity provider did not send the '{config.identity_claim}' claim that names "
            "you here; an administrator sets identity_claim in the sign-in settings"
        )
    users = state.users()
    return users.actor_for(str(name), "oidc", default_role=config.default_role, client=address)


def _proxy_user(config: AuthConfig, address: str, headers: dict[str, str]) -> Actor:
    name = headers.get(config.proxy_user_header.lower(), "").strip()
    if not name:
        raise SignInError(
            f"the sign-in proxy did not name a user (no {config.proxy_user_header} header); "
            "open the dashboard through the proxy's address"
        )
    users = state.users()
    return users.actor_for(name, "proxy", default_role=config.default_role, client=address)


def _heading() -> None:
    st.title("CXR classifier dashboard")
    st.caption("Research and education only: not a medical device, not for diagnosis.")
    note = st.session_state.get(SIGN_OUT_NOTE)
    if note:
        st.info(f"You were {note}.", icon=":material/logout:")


def _sign_in_page(config: AuthConfig, pages: Sequence[StreamlitPage] = ()) -> None:
    """What a visitor who is not signed in sees: nothing but the way to sign in. The router's
    ``pages`` are declared hidden: the address asked for is kept, no page runs or is listed (a menu
    drawn by an earlier run is replaced by none)."""
    if pages:
        st.navigation(list(pages), position="hidden")
    _heading()
    if config.mode == "local":
        _password_form(config)
    elif config.mode == "oidc":
        st.write("Sign in with your organisation's account to see films and results.")
        if st.button("Sign in", type="primary", key="cxr_sign_in_oidc", icon=":material/login:"):
            st.login(config.oidc_provider or None)
    else:
        st.write(
            "You signed out of the dashboard. Your sign-in at the proxy may still be open: end it "
            "there, or sign in here again."
        )
        if config.proxy_sign_out_url:
            st.link_button("End the proxy's sign-in", config.proxy_sign_out_url)
        if st.button("Sign in again", key="cxr_sign_in_proxy"):
            st.session_state.pop(SIGNED_OUT, None)
            st.rerun()


def _password_form(config: AuthConfig) -> None:
    with st.form("cxr_sign_in", clear_on_submit=True, width=420):
        st.subheader("Sign in")
        name = st.text_input("Name", key="cxr_sign_in_name", autocomplete="username")
        password = st.text_input(
            "Password", type="password", key="cxr_sign_in_password", autocomplete="current-password"
        )
        submitted = st.form_submit_button("Sign in", type="primary", icon=":material/login:")
    if not submitted:
        return
    address, _ = _client()
    try:
        actor = state.users().sign_in(
            name,
            password,
            client=address,
            max_failed=config.max_failed_sign_ins,
            lockout_minutes=config.lockout_minutes,
        )
    except SignInError as exc:
        st.error(str(exc).capitalize(), icon=":material/error:")
        return
    st.session_state.pop(SIGN_OUT_NOTE, None)
    st.session_state[state.ACTOR] = actor
    st.session_state[LAST_ACTIVE] = time.time()
    st.rerun()


def _no_role_page(config: AuthConfig, why: str) -> None:
    """A user the identity provider or proxy vouches for, whom this server does not let in."""
    _heading()
    st.error(why[0].upper() + why[1:], icon=":material/block:")
    if config.mode == "oidc" and st.user.is_logged_in:
        st.button("Sign out", key="cxr_no_role_sign_out", on_click=st.logout)
    st.stop()


def _forget(config: AuthConfig, why: str) -> None:
    """Audit the sign-out and forget everything this browser session held."""
    signed = st.session_state.get(state.ACTOR)
    if isinstance(signed, Actor):
        state.audit_log().record(
            signed, audit_log.SIGN_OUT, target=signed.name.casefold(), detail={"why": why}
        )
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[SIGN_OUT_NOTE] = why
    if config.mode == "proxy":
        st.session_state[SIGNED_OUT] = True


def sign_out(
    config: AuthConfig, why: str = "signed out", pages: Sequence[StreamlitPage] = ()
) -> None:
    """End this browser session's sign-in (audited), forget everything it held, and show the sign-in
    page. Called before the router draws its menu (idle sign-out, a removed account)."""
    _forget(config, why)
    if config.mode == "oidc":
        st.logout()  # clears the identity cookie; the provider's own sign-out follows
        st.stop()
    # Drawn in this very run: a rerun would replay the browser's widget values against the
    # forgotten state, and their callbacks would run for nobody.
    _sign_in_page(config, pages)
    st.stop()


def _sign_out_clicked(config: AuthConfig) -> None:
    """The sign-out button's callback: it runs before the script, so the run it starts finds nobody
    signed in and draws the sign-in page without the menu. With single sign-on the identity cookie
    is cleared by Streamlit's logout, which leaves for the provider's sign-out page."""
    _forget(config, "signed out")
    if config.mode == "oidc":
        st.logout()


def user_box(config: AuthConfig, actor: Actor) -> None:
    """Sidebar: who is signed in, with which role, and the sign-out button; watches for idleness."""
    how = VIA_WORDS.get(actor.via, actor.via)
    st.sidebar.markdown(f"Signed in as **{actor.name}**  \n{actor.role} · {how}")
    st.sidebar.button(
        "Sign out",
        key="cxr_sign_out",
        icon=":material/logout:",
        on_click=_sign_out_clicked,
        args=(config,),
    )
    _idle_watch(config)


def _idle_watch(config: AuthConfig) -> None:
    """Re-run the app when the idle time is up, so an unattended screen is cleared without a click."""
    period = max(1.0, min(60.0, config.idle_seconds / 4))

    def watch() -> None:
        last = st.session_state.get(LAST_ACTIVE)
        if last is not None and state.auth_config().idle_expired(last, time.time()):
            st.rerun(scope="app")

    with st.sidebar:
        st.fragment(watch, run_every=period)()
