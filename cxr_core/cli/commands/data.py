"""``cxr data inspect``: what a dataset folder or label file holds, before any training."""

from __future__ import annotations

import argparse
import json

from cxr_core.data.formats import FORMATS, detect_format, load_dataset
from cxr_core.data.inspect import format_summary, summarise
from cxr_core.data.splits import assign_splits


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "inspect",
        help="counts per split and class, patients, missing files, leakage",
        description="Summarise a dataset. Images without a split are shown with the patient-level split "
        "that would be made from them (stated as such; nothing is written).",
    )
    p.add_argument("path", help="dataset folder or label CSV (NIH Data_Entry, CheXpert train.csv)")
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", *FORMATS),
        help="dataset format (default: detect)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.15,
        help="validation share of all images (default 0.15)",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="test share of all images, on top of any official test set",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the patient-level split")
    p.add_argument(
        "--missing",
        choices=("error", "drop"),
        default="error",
        help="NIH/CheXpert rows whose image is absent: fail (default) or drop them",
    )
    p.add_argument(
        "--policy",
        type=chexpert_policy,
        default="ones",
        help="CheXpert uncertain (-1) labels: ones (U-Ones, default), zeros or ignore, for all classes or "
        "per class as 'Atelectasis=ones,Edema=zeros' (default=... sets the rest); training configs take "
        "the same as data.adapter.policy",
    )
    p.add_argument(
        "--blank",
        choices=("zero", "unknown"),
        default="zero",
        help="CheXpert blank label cells: negative (zero, default) or unknown (left out of that class)",
    )
    p.add_argument(
        "--frontal-only", action="store_true", help="CheXpert: keep frontal (PA/AP) images only"
    )
    p.add_argument(
        "--label-from",
        choices=("folder", "kermany3"),
        default="folder",
        help="class folders: folder names, or Normal/Bacterial/Viral from Kermany file names",
    )
    p.add_argument(
        "--labels-only",
        action="store_true",
        help="NIH/CheXpert: read the label CSV without looking for the images (no missing-file check)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_inspect)


def chexpert_policy(text: str) -> str | dict[str, str]:
    """``ones`` -> "ones"; ``Atelectasis=ones,Edema=zeros`` -> {"Atelectasis": "ones", "Edema": "zeros"}.

    Class names and policies are checked by the CheXpert adapter, which names the valid ones.
    """
    text = text.strip()
    if "=" not in text:
        return text
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = (piece.strip() for piece in item.partition("="))
        if not sep or not name or not value:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not CLASS=POLICY (e.g. Atelectasis=ones)"
            )
        out[name] = value
    return out


def _adapter_options(fmt: str, args: argparse.Namespace) -> dict:
    files = {"missing": args.missing, "check_files": not args.labels_only}
    if fmt == "nih":
        return files
    if fmt == "chexpert":
        return {
            **files,
            "policy": args.policy,
            "blank": args.blank,
            "frontal_only": args.frontal_only,
        }
    if fmt == "folders":
        return {"label_from": args.label_from}
    return {}


def _inspect(args: argparse.Namespace) -> int:
    fmt, target = detect_format(args.path) if args.format == "auto" else (args.format, args.path)
    manifest = load_dataset(target, fmt, **_adapter_options(fmt, args))
    unassigned = int((manifest.frame["split"] == "").sum())
    note = ""
    if unassigned:
        manifest = assign_splits(
            manifest, val=args.val_fraction, test=args.test_fraction, seed=args.seed
        )
        note = (
            f"{unassigned} images had no split; shown is the patient-level split that would be made "
            f"(val {args.val_fraction:g}, test {args.test_fraction:g}, seed {args.seed}), not saved"
        )
    summary = summarise(manifest, check_files=not args.labels_only, note=note)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
