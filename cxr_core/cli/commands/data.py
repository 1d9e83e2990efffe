"""``cxr data inspect``: what a dataset folder or label file holds, before any training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.options import parse_adapter_options
from cxr_core.data.formats import AUTO, detect_format, get_format, list_formats, load_dataset
from cxr_core.data.inspect import format_summary, summarise
from cxr_core.data.manifest import select_classes, select_views
from cxr_core.data.merge import merge_manifests
from cxr_core.data.splits import assign_splits
from cxr_core.errors import ConfigError

# Named command-line flags -> the adapter option they set (given only when the user gives the flag).
_FLAG_OPTIONS = ("missing", "policy", "blank", "frontal_only", "label_from")


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "inspect",
        help="counts per split and class, patients, missing files, leakage",
        description="Summarise a dataset: every image its label file lists (views are filtered only with "
        "--views). Images without a split are shown with the patient-level split that would be made from "
        "them (stated as such; nothing is written). Several paths are merged into one manifest (a finding "
        "a dataset does not label is unknown there, patient ids are kept apart per source) and counted per "
        "source.",
    )
    p.add_argument(
        "path", nargs="+", help="dataset folder or label file (several: merged, counted per source)"
    )
    p.add_argument(
        "--format",
        default=AUTO,
        choices=(AUTO, *list_formats("labels")),
        help="dataset format (default: detect); the README lists what each reads",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the format's adapter, repeatable (e.g. labels=physician for PadChest, "
        "consensus=majority for VinDr-CXR, images_dir=FOLDER); values are read as YAML",
    )
    p.add_argument("--classes", type=_names, help="comma-separated subset of classes to show")
    p.add_argument("--views", type=_names, help="keep only these views, e.g. PA,AP or frontal")
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
    _add_adapter_flags(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_inspect)


def _add_adapter_flags(p: argparse.ArgumentParser) -> None:
    """The named flags that set adapter options (each refused for a format without that option)."""
    p.add_argument(
        "--missing",
        choices=("error", "drop"),
        default=None,
        help="label-file rows whose image is absent: fail (default) or drop them",
    )
    p.add_argument(
        "--policy",
        type=chexpert_policy,
        default=None,
        help="CheXpert / MIMIC-CXR uncertain (-1) labels: ones (U-Ones, default), zeros or ignore, for all "
        "classes or per class as 'Atelectasis=ones,Edema=zeros' (default=... sets the rest); training configs "
        "take the same as data.adapter.policy",
    )
    p.add_argument(
        "--blank",
        choices=("zero", "unknown"),
        default=None,
        help="CheXpert / MIMIC-CXR blank label cells: negative (zero, default) or unknown",
    )
    p.add_argument(
        "--frontal-only",
        action="store_const",
        const=True,
        default=None,
        help="CheXpert: keep frontal (PA/AP) images only",
    )
    p.add_argument(
        "--label-from",
        choices=("folder", "kermany3"),
        default=None,
        help="class folders: folder names, or Normal/Bacterial/Viral from Kermany file names",
    )
    p.add_argument(
        "--labels-only",
        action="store_true",
        help="read the label file without looking for the images (no missing-file check)",
    )


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name")
    return names


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


def adapter_options(fmt: str, args: argparse.Namespace) -> dict:
    """The adapter keyword options the command line sets for ``fmt``: --option pairs plus the named
    flags the user gave; a flag the format does not take is refused rather than ignored."""
    known = get_format(fmt).options
    options = parse_adapter_options(args.option)
    for flag in _FLAG_OPTIONS:
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in known:
            raise ConfigError(
                f"--{flag.replace('_', '-')} does not apply to the {fmt} format; its options are: "
                f"{', '.join(known) or 'none'}"
            )
        options[flag] = value
    if args.labels_only and "check_files" in known:
        options["check_files"] = False
    return options


def source_names(paths: list[str]) -> list[str]:
    """Each path's folder or file name without extensions (``nih14``, ``Data_Entry_2017``), made
    distinct with -2, -3 where two are alike."""
    names: list[str] = []
    for path in paths:
        base = Path(path).resolve().name.split(".")[0] or "data"
        names.append(base if base not in names else f"{base}-{len(names) + 1}")
    return names


def _load_one(path: str, args: argparse.Namespace):
    fmt, target = detect_format(path) if args.format == AUTO else (args.format, path)
    return load_dataset(target, fmt, **adapter_options(fmt, args))


def _inspect(args: argparse.Namespace) -> int:
    manifests = [_load_one(path, args) for path in args.path]
    manifest = (
        manifests[0] if len(manifests) == 1 else merge_manifests(manifests, source_names(args.path))
    )
    if args.views:
        manifest = select_views(manifest, args.views)
    unassigned = int((manifest.frame["split"] == "").sum())
    note = ""
    if unassigned:  # before the class subset, as training deals it (same patients in val)
        manifest = assign_splits(
            manifest, val=args.val_fraction, test=args.test_fraction, seed=args.seed
        )
        note = (
            f"{unassigned} images had no split; shown is the patient-level split that would be made "
            f"(val {args.val_fraction:g}, test {args.test_fraction:g}, seed {args.seed}), not saved"
        )
    if args.classes:
        manifest = select_classes(manifest, args.classes)
    summary = summarise(manifest, check_files=not args.labels_only, note=note)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
