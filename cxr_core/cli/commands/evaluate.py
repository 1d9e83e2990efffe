"""``cxr evaluate``: score a checkpoint on a split, rebuilt exactly as training built it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a dataset split",
        description="Rebuilds the dataset manifest and its patient-level splits with the settings stored in the "
        "checkpoint's model card, predicts the split and writes OUT/predictions.csv and OUT/report.json "
        "(operating-point metrics with where their thresholds came from, calibration before/after the card's "
        "temperature, optional subgroups, patient-level bootstrap CIs). Warns when the data differ from "
        "what the model was validated on.",
    )
    p.add_argument("--checkpoint", required=True, help="model .safetensors file")
    p.add_argument("--data", default=None, help="dataset folder or label CSV (default: the path in the model card)")
    p.add_argument("--format", default=None, help="auto, nih, chexpert, folders, disease-folders (default: as in the card)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint folder>/eval/<split>, "
                   "or eval/<split>-data-<fingerprint> when the data differ from the card's)")
    p.add_argument("--thresholds", default=None,
                   help="operating point: a rule cross-fitted on this split by patient (max_f1, youden, "
                   "sensitivity=0.9, specificity=0.95), 'card', or the name of a saved threshold set "
                   "(default: as the card was made: cross-fitted again on its validation split, the card's on others)")
    p.add_argument("--by", action="append", default=[], metavar="KEY",
                   help="subgroup report by a manifest column, repeatable: 'View Position' (view), sex, age (in bands)")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default: as in the card, else 1000)")
    p.add_argument("--seed", type=int, default=None, help="bootstrap seed (default: as in the card, else 0)")
    p.add_argument("--cache-dir", default=None, help="image cache folder (default: the training run's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.artifacts.run_dir import RunDir
    from cxr_core.evaluation.run import evaluate_checkpoint
    from cxr_core.models.checkpoint import read_model_card
    from cxr_core.training.data_setup import build_manifest, data_config_of

    checkpoint = Path(args.checkpoint)
    card = read_model_card(checkpoint)
    data = data_config_of(card, checkpoint=checkpoint, path=args.data, fmt=args.format, cache_dir=args.cache_dir)
    manifest = build_manifest(data)
    expected = card.data.get("manifest_fingerprint")
    run_dir = RunDir.of_checkpoint(checkpoint)
    out = Path(args.out) if args.out else run_dir.eval_dir(args.split)
    if expected and manifest.fingerprint() != expected:
        if not args.out:  # keep the training run's own evaluation intact
            out = run_dir.eval_dir(f"{args.split}-data-{manifest.fingerprint()}")
        print(
            "WARNING: the dataset (files, labels or split assignment) differs from the one this model was "
            f"trained and validated on (manifest fingerprint {manifest.fingerprint()}, model card says {expected}). "
            f"The numbers will not reproduce the model card's. Writing to {out}.",
            file=sys.stderr,
        )
    validation = card.validation or {}
    report = evaluate_checkpoint(
        checkpoint,
        manifest,
        args.split,
        out,
        n_boot=args.n_boot if args.n_boot is not None else int(validation.get("n_boot") or 1000),
        seed=args.seed if args.seed is not None else int(validation.get("seed") or 0),
        cache_dir=data.cache_dir,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        thresholds=args.thresholds,
        subgroups=args.by,
    )
    from cxr_core.metrics import format_report

    print(format_report(report))
    return 0
