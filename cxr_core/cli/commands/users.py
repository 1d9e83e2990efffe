"""``cxr users``: the users of a dashboard with sign-in, and their roles.

The command line acts as its operator, an admin (whoever can run it holds the database file
anyway), or with ``--as USER``'s role. Passwords are typed at a prompt (twice) or read from
standard input with ``--password-stdin``, never given as an argument (the process list shows
arguments to every user). Every change is written to the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from cxr_core.access.roles import ROLES
from cxr_core.cli.options import acting_store, add_actor_options
from cxr_core.errors import SignInError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "users",
        help="add, remove and list dashboard users and their roles",
        description="Manage who may sign in to the dashboard and with which role "
        f"({', '.join(ROLES)}). Local accounts have a password; users who sign in through "
        "OpenID Connect or a trusted proxy are added with --no-password.",
    )
    sub = p.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="add a user")
    add.add_argument("name", help="login name, or the e-mail your identity provider sends")
    add.add_argument("--role", required=True, choices=ROLES)
    _password_source(add, allow_none=True)
    add.set_defaults(handler=run_add)
    remove = sub.add_parser("remove", help="remove a user (their calls stay)")
    remove.add_argument("name")
    remove.set_defaults(handler=run_remove)
    passwd = sub.add_parser("passwd", help="set a local account's password")
    passwd.add_argument("name")
    _password_source(passwd, allow_none=False)
    passwd.set_defaults(handler=run_passwd)
    role = sub.add_parser("role", help="change a user's role")
    role.add_argument("name")
    role.add_argument("role", choices=ROLES)
    role.set_defaults(handler=run_role)
    listing = sub.add_parser("list", help="list users and roles (never passwords)")
    listing.set_defaults(handler=run_list)
    for parser in (add, remove, passwd, role, listing):
        add_actor_options(parser)


def _password_source(parser: argparse.ArgumentParser, *, allow_none: bool) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )
    if allow_none:
        group.add_argument(
            "--no-password",
            action="store_true",
            help="no local password: the user signs in through OpenID Connect or a proxy",
        )


def _password(args: argparse.Namespace) -> str | None:
    if getattr(args, "no_password", False):
        return None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise SignInError("the two passwords differ; nothing was changed")
    return first


def run_add(args: argparse.Namespace) -> int:
    store = acting_store(args)
    user = store.users.add(store.actor, args.name, args.role, _password(args))
    kind = "local account" if user.has_password else "signs in through SSO or a proxy"
    print(f"added {user.name} as {user.role} ({kind})")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    store = acting_store(args)
    store.users.remove(store.actor, args.name)
    print(f"removed {args.name}")
    return 0


def run_passwd(args: argparse.Namespace) -> int:
    store = acting_store(args)
    store.users.set_password(store.actor, args.name, _password(args) or "")
    print(f"changed the password of {args.name}")
    return 0


def run_role(args: argparse.Namespace) -> int:
    store = acting_store(args)
    user = store.users.set_role(store.actor, args.name, args.role)
    print(f"{user.name} is now {user.role}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    store = acting_store(args)
    users = store.users.list()
    if not users:
        print("no users yet: add the first admin with `cxr users add NAME --role admin`")
        return 0
    width = max(len(u.name) for u in users)
    for user in users:
        how = "password" if user.has_password else "SSO / proxy"
        print(f"{user.name:<{width}}  {user.role:<11}  {how:<11}  added {user.created[:10]}")
    return 0
