"""``cxr compare``: two checkpoints on the same images, finding by finding, with paired statistics."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr_core.cli.options import (
    DEFAULT_N_BOOT,
    DEFAULT_SEED,
    add_card_data_options,
    add_compute_options,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare two checkpoints on the same split, finding by finding",
        description="Evaluates both checkpoints on one split of one dataset (the first checkpoint's data and "
        "split rule unless --data is given; each model with its own preprocessing and operating point, as "
        "`cxr evaluate` would) and compares them per finding: AUROC and AP of both with the difference and its "
        "paired patient-level bootstrap CI, DeLong's test of the AUROCs, and the sensitivity and specificity "
        "difference at each model's operating point with a paired CI and McNemar's test. Writes "
        "OUT/comparison.json (per-finding delta_* fields), OUT/comparison.csv (the table) and each model's "
        "evaluation under OUT/models/<name>/. Differences are first minus second.",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="MODEL",
        help="model .safetensors file; give exactly two, the first is compared with the second",
    )
    add_card_data_options(p)
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--thresholds",
        default=None,
        help="operating point of both models: a rule cross-fitted on this split (max_f1, youden, "
        "specificity=0.9, ...) or 'card' (default: as each card was made)",
    )
    p.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="bootstrap and fold seed")
    add_compute_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.errors import ConfigError
    from cxr_core.evaluation.compare import compare_checkpoints, format_comparison
    from cxr_core.models.checkpoint import read_model_card
    from cxr_core.training.data_setup import build_manifest, data_config_of

    if len(args.checkpoint) != 2:
        raise ConfigError(
            f"give exactly two --checkpoint options (the models to compare); got {len(args.checkpoint)}"
        )
    first = Path(args.checkpoint[0])
    data = data_config_of(
        read_model_card(first),
        checkpoint=first,
        path=args.data,
        fmt=args.format,
        cache_dir=args.cache_dir,
    )
    report = compare_checkpoints(
        args.checkpoint,
        build_manifest(data),
        args.split,
        args.out,
        n_boot=args.n_boot,
        seed=args.seed,
        cache_dir=data.cache_dir,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        thresholds=args.thresholds,
    )
    print(format_comparison(report))
    print(f"wrote {Path(args.out) / 'comparison.json'} and comparison.csv")
    return 0
