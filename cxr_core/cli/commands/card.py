"""``cxr card refresh``: re-stamp a checkpoint's model card without retraining; ``cxr card sign``:
sign the card of a checkpoint written before cards were signed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxr_core.cli.options import add_bootstrap_options, add_card_data_options, add_compute_options


def register(subparsers: argparse._SubParsersAction) -> None:
    card = subparsers.add_parser("card", help="model card maintenance")
    sub = card.add_subparsers(dest="card_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "refresh",
        help="recompute calibration, out-of-sample thresholds and subgroups of a checkpoint's card",
        description="Re-predicts the checkpoint's validation split (rebuilt from its model card), fits temperature "
        "scaling, cross-fits the operating point by patient (5 folds) and computes subgroup metrics, then rewrites the "
        "model card (the weights are unchanged), <checkpoint folder>/eval/val/{predictions.csv,report.json} and the "
        "max_f1 preset threshold set.",
    )
    p.add_argument("--checkpoint", required=True, help="model .safetensors file")
    add_card_data_options(p)
    p.add_argument(
        "--operating-point",
        default=None,
        help="multilabel threshold rule stored in the card: specificity=0.9 (default), max_f1, youden, "
        "sensitivity=0.9, ...",
    )
    p.add_argument(
        "--by",
        action="append",
        default=None,
        help="subgroup key (repeatable; default: view, sex and age where the data have them)",
    )
    add_bootstrap_options(p, seed_help="bootstrap and fold seed")
    add_compute_options(p)
    p.set_defaults(handler=run)
    sign = sub.add_parser(
        "sign",
        help="sign a checkpoint's model card as it is (checkpoints written before cards were signed)",
        description="Verifies the card (schema) and the weights (their checksum), then rewrites the checkpoint with "
        "one checksum over the whole card, the weights and the input-gate statistics, so that any later edit of the "
        "card is refused naming the changed fields. Sign only a file you trust: the card is taken as it is.",
    )
    sign.add_argument("--checkpoint", required=True, nargs="+", help="model .safetensors file(s)")
    sign.set_defaults(handler=run_sign)


def run(args: argparse.Namespace) -> int:
    from cxr_core.cli.options import bootstrap_settings
    from cxr_core.errors import DatasetError
    from cxr_core.evaluation.run import refresh_card
    from cxr_core.models.checkpoint import read_model_card
    from cxr_core.training.data_setup import build_manifest, data_config_of

    checkpoint = Path(args.checkpoint)
    card = read_model_card(checkpoint)
    data = data_config_of(
        card, checkpoint=checkpoint, path=args.data, fmt=args.format, cache_dir=args.cache_dir
    )
    manifest = build_manifest(data)
    expected = card.data.get("manifest_fingerprint")
    if expected and manifest.fingerprint() != expected:
        raise DatasetError(
            f"the dataset differs from the one this model was validated on (manifest fingerprint "
            f"{manifest.fingerprint()}, model card says {expected}); a card can only be re-stamped on its own "
            "validation split"
        )
    n_boot, seed = bootstrap_settings(args, card)
    refresh_card(  # logs the report
        checkpoint,
        manifest,
        n_boot=n_boot,
        seed=seed,
        cache_dir=data.cache_dir,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        operating_point=args.operating_point,
        subgroups=args.by,
    )
    print(f"model card of {checkpoint} re-stamped (weights unchanged)", file=sys.stderr)
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from cxr_core.models.checkpoint import sign_checkpoint

    for path in args.checkpoint:
        card = sign_checkpoint(path)
        print(
            f"signed the model card of {path}: {card.architecture}, classes {list(card.classes)}",
            file=sys.stderr,
        )
    return 0
