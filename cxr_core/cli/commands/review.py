"""``cxr review``: export a review session's verdicts and show how far its readers agree.

Both run as the operator (an admin, not one of the session's readers: blinding does not apply)
or, with ``--as USER``, with that user's role and blinding, as the Review page would show them:
exporting needs the adjudicator role, and a blinded session stays closed to a user with films
still to call. Exports replace film identifiers by this install's pseudonyms unless
``--identifiable``.
"""

from __future__ import annotations

import argparse

from cxr_core.cli.options import acting_store, add_actor_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "review",
        help="export review verdicts, reader agreement",
        description="Work with the review database the dashboard's Review page writes.",
    )
    sub = p.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    e = sub.add_parser(
        "export",
        help="one CSV row per reader verdict",
        description="One row per reader verdict with the model's probability, the threshold, the "
        "outcome (TP/FP/FN/TN), the ground truth, the reader, the reading mode and the time. "
        "Cells a spreadsheet would run as formulas are prefixed with an apostrophe.",
    )
    add_actor_options(e)
    e.add_argument("--session", type=int, default=None, help="session id (default: every session)")
    e.add_argument("--out", required=True, help="CSV file to write")
    e.add_argument(
        "--identifiable",
        action="store_true",
        help="keep film identifiers as they are (default: this install's pseudonyms; needs the "
        "right to see patient identifiers)",
    )
    e.set_defaults(handler=run_export)
    a = sub.add_parser(
        "agreement",
        help="kappa table of a session",
        description="Per class: Cohen's kappa for every pair of readers and of each reader with the "
        "dataset label and the model at the session's thresholds; Fleiss' kappa for three or "
        "more readers; the observed agreement; 95%% bootstrap intervals over films. Below 10 films "
        'called by every rater compared there is no kappa, agreement or interval ("not enough '
        'films"); a kappa can also have no value because every call was the same.',
    )
    add_actor_options(a)
    a.add_argument("--session", type=int, required=True, help="session id")
    a.add_argument(
        "--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals (0: none)"
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--csv", default=None, help="also write the table to this CSV file")
    a.set_defaults(handler=run_agreement)


def run_export(args: argparse.Namespace) -> int:
    from cxr_core.evaluation.review import export_session

    store = acting_store(args)
    n = export_session(store, args.session, args.out, identifiable=args.identifiable)
    how = "" if args.identifiable else " (films pseudonymised)"
    print(f"wrote {n} verdict row(s) to {args.out}{how}")
    return 0


def run_agreement(args: argparse.Namespace) -> int:
    import pandas as pd

    from cxr_core.evaluation.review import (
        agreement,
        kappa_text,
        load_session,
        require_open,
        session_frame,
    )
    from cxr_core.utils.csv_safe import write_frame_csv

    store = acting_store(args)
    data = load_session(store, args.session)
    require_open(store, data)
    table = agreement(session_frame(store, data), n_boot=args.bootstrap, seed=args.seed)
    if args.csv:
        write_frame_csv(table, args.csv)
    if table.empty:
        print(f"session {args.session} has no reader calls yet")
        return 0
    shown = table.drop(columns="undefined")
    shown["kappa"] = [kappa_text(k, why) for k, why in zip(table["kappa"], table["undefined"])]
    for column in (
        "ci_low",
        "ci_high",
        "observed_agreement",
        "agreement_ci_low",
        "agreement_ci_high",
    ):
        shown[column] = shown[column].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")
    print(
        f"session {args.session} · {data.session.name} · mode {data.session.mode} · readers: "
        f"{', '.join(store.readers(args.session))}"
    )
    print(shown.to_string(index=False))
    return 0
