"""Who may do what: the roles, the actions each allows, and the user an action is done as.

The roles are ordered, each allowing everything the one before it does:

========================  ======  ======  ===========  =====
action                    viewer  reader  adjudicator  admin
========================  ======  ======  ===========  =====
view films and results      x       x         x          x
save a threshold set                x         x          x
call films (review)                 x         x          x
reveal a blinded session            x         x          x
see patient identifiers                       x          x
create a review session                       x          x
adjudicate                                    x          x
export review verdicts                        x          x
make a set the default                                   x
manage users                                             x
read the audit log                                       x
========================  ======  ======  ===========  =====

The stores check these (:meth:`Actor.require`), so a page that forgets to is still refused.
An :class:`Actor` is who a store acts for: the signed-in user, the single user of a local
install, or the command line's operator. A refusal is an :class:`~cxr_core.errors.AccessDeniedError`
naming the action, the user's role and the roles that would allow it.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from cxr_core.errors import AccessDeniedError

ROLES: tuple[str, ...] = ("viewer", "reader", "adjudicator", "admin")
"""Lowest first; each role allows everything the roles before it do."""

VIEW = "view"
SAVE_THRESHOLDS = "save_thresholds"
CALL = "call"
REVEAL = "reveal"
VIEW_PATIENT_DATA = "view_patient_data"
CREATE_SESSION = "create_session"
ADJUDICATE = "adjudicate"
EXPORT = "export"
SET_DEFAULT_THRESHOLDS = "set_default_thresholds"
MANAGE_USERS = "manage_users"
READ_AUDIT = "read_audit"

ACTIONS: dict[str, tuple[str, str]] = {
    VIEW: ("viewer", "view films, model output and evaluation results"),
    SAVE_THRESHOLDS: ("reader", "save a threshold set"),
    CALL: ("reader", "call films in a review session"),
    REVEAL: ("reader", "reveal a blinded session's labels and model output"),
    VIEW_PATIENT_DATA: ("adjudicator", "see patient identifiers"),
    CREATE_SESSION: ("adjudicator", "start or change a review session"),
    ADJUDICATE: ("adjudicator", "adjudicate disagreements"),
    EXPORT: ("adjudicator", "export review verdicts"),
    SET_DEFAULT_THRESHOLDS: ("admin", "make a threshold set the model's default for everyone"),
    MANAGE_USERS: ("admin", "add, remove or change users"),
    READ_AUDIT: ("admin", "read the audit log"),
}
"""action -> (the lowest role that may do it, what it is in words)."""

VIA_LOCAL = "local"  # the single user of an install with no sign-in (127.0.0.1 only)
VIA_CLI = "cli"  # the operator of the command line
VIA_CLI_AS = "cli_as"  # the command line run as a listed user (--as NAME), with their role
SIGN_IN_VIAS = ("oidc", "password", "proxy")
IDENTIFIED_VIAS = (*SIGN_IN_VIAS, VIA_CLI_AS)


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`, else an error listing them."""
    clean = str(role).strip().lower()
    if clean not in ROLES:
        raise AccessDeniedError(f"'{role}' is not a role; the roles are: {', '.join(ROLES)}")
    return clean


def roles_allowed(action: str) -> tuple[str, ...]:
    """The roles that may do ``action``, lowest first."""
    lowest, _ = ACTIONS[action]
    return ROLES[ROLES.index(lowest) :]


def allows(role: str, action: str) -> bool:
    return role in roles_allowed(action)


def role_table() -> list[dict[str, str]]:
    """One row per action: what it is and, per role, whether it is allowed (for the docs and the Users page)."""
    return [
        {"action": words, **{role: "yes" if allows(role, a) else "" for role in ROLES}}
        for a, (_, words) in ACTIONS.items()
    ]


@dataclass(frozen=True)
class Actor:
    """Who an action is done as: a name (the reader name stored with their work), a role, and how
    they came in (``local``, ``cli``, ``cli_as`` or one of :data:`SIGN_IN_VIAS`)."""

    name: str
    role: str
    via: str
    client: str = ""  # the address the request came from, where there is one

    def __post_init__(self) -> None:
        check_role(self.role)

    @property
    def identified(self) -> bool:
        """True for a user whose name is who they are (signed in, or a listed user named with
        ``--as``), not a name someone typed."""
        return self.via in IDENTIFIED_VIAS

    def may(self, action: str) -> bool:
        return allows(self.role, action)

    def require(self, action: str) -> None:
        """Raise :class:`AccessDeniedError` saying why, unless this actor's role allows ``action``."""
        if self.may(action):
            return
        _, words = ACTIONS[action]
        allowed = roles_allowed(action)
        raise AccessDeniedError(
            f"{self.name or 'this user'} ({self.role}) may not {words}: that needs the role "
            f"{' or '.join(allowed)}; ask an admin to change your role"
        )

    def as_self(self, name: str, what: str) -> str:
        """The name work is saved under: a signed-in user's own, whatever ``name`` was asked for.

        A local install's single user and the command line's operator may name any reader (they
        hold the database file anyway); an identified user asking for another name is refused.
        """
        clean = " ".join(str(name or "").split())
        if not self.identified:
            return clean
        if clean and clean.casefold() != self.name.casefold():
            raise AccessDeniedError(
                f"you are signed in as {self.name}; {what} is saved under your own name only, "
                f"not as {clean}"
            )
        return self.name


def local_user(name: str = "") -> Actor:
    """The single user of an install with no sign-in: everything is allowed (only this computer can reach it)."""
    return Actor(" ".join(str(name).split()), "admin", VIA_LOCAL)


def operator(name: str | None = None) -> Actor:
    """The command line's operator: an admin named after the operating-system account."""
    try:
        who = name or getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        who = "operator"
    return Actor(who, "admin", VIA_CLI)
