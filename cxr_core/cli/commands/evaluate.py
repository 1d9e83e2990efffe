"""``cxr evaluate``: score a checkpoint on a split, rebuilt exactly as training built it, or
score another tool's predictions (``--predictions``) the same way."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxr_core.cli.options import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    add_bootstrap_options,
    add_card_data_options,
    add_compute_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a dataset split",
        description="Rebuilds the dataset manifest and its patient-level splits with the settings stored in the "
        "checkpoint's model card, predicts the split and writes OUT/predictions.csv and OUT/report.json "
        "(operating-point metrics with where their thresholds came from, calibration before/after the card's "
        "temperature, optional subgroups, patient-level bootstrap CIs). Warns when the data differ from "
        "what the model was validated on. With --predictions FILE.csv instead of --checkpoint, scores "
        "probabilities made by another tool (an image column such as image_id or path, one probability column "
        "per class) on the classes it shares with --data, and writes OUT/external.json + OUT/eval/<split>/ so "
        "the dashboard lists it as a model. A segmentation checkpoint (the lung model) is scored on its "
        "image+mask folder instead: OUT/scores.csv (Dice, IoU, HD95 per image) and OUT/report.json (means "
        "with patient-level bootstrap CIs); --split all scores every pair. Predictions wait in OUT/.cxr-work/ (a rerun "
        "resumes); under torchrun the processes share the split's images and rank 0 scores them.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="model .safetensors file")
    source.add_argument(
        "--predictions", help="CSV of probabilities made by another tool (see the README)"
    )
    p.add_argument(
        "--name",
        default=None,
        help="with --predictions: the model's name in the dashboard (default: the file name)",
    )
    p.add_argument(
        "--like",
        default=None,
        help="with --predictions: a checkpoint whose data splits and thresholds "
        "to use, to compare with it on exactly the same images",
    )
    p.add_argument(
        "--val",
        type=float,
        default=None,
        help="validation fraction when the dataset defines no split "
        "(default: as in the card, else 0.15), e.g. for an imported model",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=None,
        help="seed of the patient split (default: as in the card, else 0)",
    )
    add_card_data_options(p)
    p.add_argument(
        "--classes",
        type=_class_names,
        default=None,
        help="score only these classes (comma-separated, any known spelling); the split is dealt as "
        "in training, so the images are the same",
    )
    p.add_argument("--split", default="val", choices=["train", "val", "test", "all"])
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: <checkpoint folder>/eval/<split>, "
        "or eval/<split>-data-<fingerprint> when the data differ from the card's)",
    )
    p.add_argument(
        "--thresholds",
        default=None,
        help="operating point: a rule cross-fitted on this split by patient (max_f1, youden, "
        "sensitivity=0.9, specificity=0.95), 'card', or the name of a saved threshold set "
        "(default: as the card was made: cross-fitted again on its validation split, the card's on others); "
        "with --predictions: a JSON file {class: threshold} (default: --like's, else 0.5)",
    )
    p.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="subgroup report by a manifest column, repeatable: 'View Position' (view), sex, age (in bands)",
    )
    _add_truth_options(p)
    add_bootstrap_options(p)
    add_compute_options(p)
    p.set_defaults(handler=run)


def _add_truth_options(p: argparse.ArgumentParser) -> None:
    truth = p.add_mutually_exclusive_group()
    truth.add_argument(
        "--truth",
        default=None,
        metavar="LABELS",
        help="also score the same predictions against this second label source for the same images "
        "(a label file or dataset folder, joined by image id, classes by harmonised name), e.g. "
        "radiologist-adjudicated labels; writes OUT/truth.json with both side by side and the change",
    )
    truth.add_argument(
        "--truth-session",
        type=int,
        default=None,
        metavar="ID",
        help="second truth: a review session's corrected labels (adjudicated, else the readers' majority)",
    )
    p.add_argument("--truth-format", default="auto", help="format of --truth (default: detected)")
    p.add_argument(
        "--review-db", default=None, help="with --truth-session: its folder or PostgreSQL URL"
    )


def run(args: argparse.Namespace) -> int:
    if args.predictions:
        return run_external(args)
    from cxr_core.artifacts.run_dir import RunDir
    from cxr_core.cli.options import bootstrap_settings
    from cxr_core.cli.processes import run_processes
    from cxr_core.evaluation.run import evaluate_checkpoint
    from cxr_core.evaluation.segmentation import (
        evaluate_segmentation,
        format_segmentation_report,
        is_segmentation_card,
    )
    from cxr_core.models.checkpoint import read_model_card
    from cxr_core.training.data_setup import build_manifest, data_config_of

    checkpoint = Path(args.checkpoint)
    card = read_model_card(checkpoint)
    if is_segmentation_card(card):
        pairs = data_config_of(
            card, checkpoint=checkpoint, path=args.data
        )  # follows a moved clone + data
        _, report = evaluate_segmentation(
            checkpoint,
            data=pairs.path,
            split=args.split,
            device=args.device,
            out_dir=args.out,
            n_boot=bootstrap_settings(args, card)[0],
        )
        print(format_segmentation_report(report))
        return 0
    if args.split == "all":
        print(
            "--split all is for segmentation checkpoints; use train, val or test", file=sys.stderr
        )
        return 2
    data = data_config_of(
        card, checkpoint=checkpoint, path=args.data, fmt=args.format, cache_dir=args.cache_dir
    )
    _override_split(data, args)
    manifest = build_manifest(data)
    expected = card.data.get("manifest_fingerprint")
    run_dir = RunDir.of_checkpoint(checkpoint)
    out = Path(args.out) if args.out else run_dir.eval_dir(args.split)
    warning = ""
    if expected and manifest.fingerprint() != expected:
        if not args.out:  # keep the training run's own evaluation intact
            out = run_dir.eval_dir(f"{args.split}-data-{manifest.fingerprint()}")
        warning = (
            "WARNING: the dataset (files, labels or split assignment) differs from the one this model was "
            f"trained and validated on (manifest fingerprint {manifest.fingerprint()}, model card says {expected}). "
            f"The numbers will not reproduce the model card's. Writing to {out}."
        )
    n_boot, seed = bootstrap_settings(args, card)
    with run_processes(args.device) as ctx:
        if warning and ctx.is_main:
            print(warning, file=sys.stderr)
        report = evaluate_checkpoint(
            checkpoint,
            manifest,
            args.split,
            out,
            n_boot=n_boot,
            seed=seed,
            cache_dir=data.cache_dir,
            batch_size=args.batch_size,
            device=ctx.device,
            progress=not args.no_progress and ctx.is_main,
            thresholds=args.thresholds,
            subgroups=args.by,
            ranks=ctx,
        )
    if report is None:  # rank 0 scores and reports
        return 0
    from cxr_core.metrics import format_report

    print(format_report(report))
    _second_truth(args, out, report, manifest.source, n_boot, seed)
    return 0


def _class_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _second_truth(args: argparse.Namespace, out: Path, report, primary: str, n_boot, seed) -> None:
    """With --truth / --truth-session: the same predictions and calls scored against it too."""
    if args.truth is None and args.truth_session is None:
        return
    from cxr_core.artifacts.review_store import ReviewStore
    from cxr_core.evaluation import truth
    from cxr_core.evaluation.saved_runs import run_decisions

    run = truth.saved_run(out, args.split, report)
    if args.truth is not None:
        alternate = truth.labels_from_file(run, args.truth, args.truth_format)
    else:
        alternate = truth.labels_from_session(run, ReviewStore(args.review_db), args.truth_session)
    comparison = truth.compare_truths(
        run,
        alternate,
        run_decisions(run, report.multilabel),
        primary=f"dataset labels ({primary})" if primary else "dataset labels",
        n_boot=n_boot,
        seed=seed,
    )
    print(truth.format_truth(comparison))
    print(f"wrote {truth.write_truth_comparison(out, comparison)}")


def _override_split(data, args: argparse.Namespace) -> None:
    for key, value in (
        ("val", args.val),
        ("split_seed", args.split_seed),
        ("classes", args.classes),
    ):
        if value is not None:
            setattr(data, key, value)


def run_external(args: argparse.Namespace) -> int:
    import json

    from cxr_core.errors import ConfigError
    from cxr_core.evaluation.external import evaluate_external
    from cxr_core.metrics import format_report
    from cxr_core.models.checkpoint import read_model_card
    from cxr_core.training.config import DataConfig
    from cxr_core.training.data_setup import build_manifest, data_config_of

    if not args.out:
        raise ConfigError(
            "--predictions needs --out, the folder of the new run (the dashboard lists it as a model)"
        )
    thresholds = None
    if args.like:
        card = read_model_card(args.like)
        data = data_config_of(
            card, checkpoint=args.like, path=args.data, fmt=args.format, cache_dir=args.cache_dir
        )
        thresholds = dict(card.thresholds)
    elif not args.data:
        raise ConfigError("--predictions needs --data, the dataset the predictions are for")
    else:
        data = DataConfig(path=args.data, format=args.format or "auto")
    _override_split(data, args)
    if args.thresholds:
        try:
            thresholds = json.loads(Path(args.thresholds).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read thresholds from {args.thresholds}: {exc}") from None
        if not isinstance(thresholds, dict):
            raise ConfigError(f"{args.thresholds} must hold a JSON object {{class: threshold}}")
    manifest = build_manifest(data)
    if thresholds is not None:  # --like's card may hold classes the file does not score
        from cxr_core.data.labels import canonical_name

        predicted = {canonical_name(c) for c in manifest.classes}
        thresholds = {c: t for c, t in thresholds.items() if canonical_name(c) in predicted}
    name = args.name or Path(args.predictions).stem
    report = evaluate_external(
        args.predictions,
        manifest,
        args.split,
        args.out,
        name=name,
        thresholds=thresholds,
        n_boot=args.n_boot if args.n_boot is not None else DEFAULT_N_BOOT,
        seed=args.seed if args.seed is not None else DEFAULT_SEED,
    )
    print(format_report(report))
    mapping = report.label_mapping
    if mapping["model_only"] or mapping["data_only"]:
        print(
            f"not scored: predicted but not labelled here {mapping['model_only']}; "
            f"labelled but not predicted {mapping['data_only']}",
            file=sys.stderr,
        )
    print(f"wrote {args.out} (listed in the dashboard as 'external: {name}')")
    return 0
