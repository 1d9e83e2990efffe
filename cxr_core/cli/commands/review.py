"""``cxr review``: export a review session's verdicts and show how far its readers agree."""

from __future__ import annotations

import argparse

import pandas as pd

from cxr_core.artifacts.review_store import ReviewStore
from cxr_core.evaluation.review import (
    agreement,
    export_session,
    kappa_text,
    load_session,
    session_frame,
)
from cxr_core.utils.csv_safe import write_frame_csv


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
    e.add_argument(
        "--db", required=True, help="folder holding review.sqlite3 (the dashboard's CXR_REVIEW_DIR)"
    )
    e.add_argument("--session", type=int, default=None, help="session id (default: every session)")
    e.add_argument("--out", required=True, help="CSV file to write")
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
    a.add_argument("--db", required=True, help="folder holding review.sqlite3")
    a.add_argument("--session", type=int, required=True, help="session id")
    a.add_argument(
        "--bootstrap", type=int, default=500, help="bootstrap resamples for the intervals (0: none)"
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--csv", default=None, help="also write the table to this CSV file")
    a.set_defaults(handler=run_agreement)


def _store(folder: str) -> ReviewStore:
    return ReviewStore(folder)


def run_export(args: argparse.Namespace) -> int:
    store = _store(args.db)
    n = export_session(store, args.session, args.out)
    print(f"wrote {n} verdict row(s) to {args.out}")
    return 0


def run_agreement(args: argparse.Namespace) -> int:
    store = _store(args.db)
    data = load_session(store, args.session)
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
