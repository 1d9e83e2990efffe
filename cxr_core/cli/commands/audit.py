"""``cxr audit export``: the audit log (sign-ins, films viewed, calls, reveals, exports, threshold and
user changes) as CSV or JSON lines, films pseudonymised unless ``--identifiable``."""

from __future__ import annotations

import argparse

from cxr_core.cli.options import acting_store, add_actor_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="export the audit log",
        description="The dashboard's audit log: who signed in, viewed which film, called, revealed, "
        "exported, changed thresholds or users, when and from where.",
    )
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    e = sub.add_parser(
        "export",
        help="write the audit log to a file (needs the admin role)",
        description="Oldest first, one row per event. The film each event concerns is replaced by "
        "this install's pseudonym (the same film always gives the same one) unless --identifiable.",
    )
    e.add_argument("--out", required=True, help="file to write (.csv or .jsonl)")
    e.add_argument("--format", choices=("csv", "jsonl"), default=None, help="default: from --out")
    e.add_argument("--since", default=None, help="only events from this time on (e.g. 2026-12-01)")
    e.add_argument(
        "--identifiable",
        action="store_true",
        help="keep film identifiers as they are (needs the right to see patient identifiers)",
    )
    add_actor_options(e)
    e.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    store = acting_store(args)
    fmt = args.format or ("jsonl" if str(args.out).lower().endswith(".jsonl") else "csv")
    pseudonymiser = None if args.identifiable else store.pseudonymiser()
    n = store.audit.export(
        store.actor, args.out, pseudonymiser=pseudonymiser, since=args.since, fmt=fmt
    )
    print(f"wrote {n} audit event(s) to {args.out}")
    return 0
