"""``cxr ensemble``: train an ensemble recipe's members and combine them into one checkpoint."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ensemble",
        help="train the members of an ensemble recipe and combine them into one checkpoint",
        description="Reads an ensemble recipe (members: training configs; eval: n_boot, tta; out_dir). Trains each "
        "member with its own config, one after another (a member whose out_dir already holds that finished run is "
        "reused; an interrupted one is resumed), then writes OUT/model.safetensors averaging the members' logits, "
        "validated like a training run: thresholds, bootstrap CIs and OUT/eval/val. "
        "Relative paths in the recipe are resolved against the current directory.",
    )
    p.add_argument("--config", required=True, help="ensemble recipe YAML (see configs/nih14.yaml)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.metrics import format_report
    from cxr_core.training.config import EnsembleConfig
    from cxr_core.training.ensembling import train_ensemble

    config = EnsembleConfig.from_yaml(args.config)
    report = train_ensemble(config, progress=not args.no_progress)
    if report is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    if args.no_progress:
        print(format_report(report))
    print(
        f"ensemble checkpoint: {config.out_dir}/model.safetensors\nvalidation report: {config.out_dir}/eval/val"
    )
    return 0
