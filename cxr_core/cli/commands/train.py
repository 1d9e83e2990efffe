"""``cxr train``: train the model a YAML config describes (``task: classification`` or
``segmentation``), also under ``torchrun`` for several GPUs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a classifier or a segmentation model from a YAML config",
        description="Writes OUT/model.safetensors (best epoch, with model card and validation thresholds), "
        "last.safetensors, train_state.pt, training_log.jsonl, config.yaml and eval/val/. "
        "Relative paths in the config are resolved against the current directory. "
        "For several GPUs: torchrun --nproc_per_node=N -m cxr_core train --config ...",
    )
    p.add_argument("--config", required=True, help="YAML training config (see configs/)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in the output folder exactly",
    )
    p.add_argument("--max-epochs", type=int, default=None, help="override the config's epochs")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="end after N more epochs, leaving a state that --resume continues (train in chunks)",
    )
    p.add_argument("--out", default=None, help="output folder (overrides out_dir)")
    p.add_argument("--device", default=None, help="override device: auto, cpu, cuda")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.training.config import load_config
    from cxr_core.training.engine import train

    overrides: dict = {}
    if args.max_epochs is not None:
        overrides["epochs"] = args.max_epochs
    if args.out is not None:
        overrides["out_dir"] = str(Path(args.out).resolve())
    if args.device is not None:
        overrides["device"] = args.device
    config = load_config(args.config, overrides=overrides)
    result = train(
        config, resume=args.resume, progress=not args.no_progress, stop_after_epochs=args.stop_after
    )
    if not result.completed:
        print(
            f"paused after epoch {result.epochs_run} of {config.epochs}; continue with --resume --out {result.out_dir}"
        )
    elif result.report is not None:
        print(
            f"best {result.monitor} {result.best_metric:.4f} at epoch {result.best_epoch} of {result.epochs_run}"
            f"{' (stopped early)' if result.stopped_early else ''}; {result.wall_time_s:.1f}s of training\n"
            + (f"{result.headline}\n" if result.headline else "")
            + f"checkpoint: {result.best_checkpoint}\nvalidation report: {result.out_dir / 'eval' / 'val'}"
        )
    return 0
