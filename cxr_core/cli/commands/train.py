"""``cxr train``: train a classifier (also under ``torchrun`` for several GPUs) or, with
``task: segmentation`` in the config, a segmentation model, from a YAML config."""

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
    from cxr_core.errors import ConfigError
    from cxr_core.models import get_model_spec, list_models
    from cxr_core.training import load_config, train
    from cxr_core.training.config import TASK_SEGMENTATION

    overrides: dict = {}
    if args.max_epochs is not None:
        overrides["epochs"] = args.max_epochs
    if args.out is not None:
        overrides["out_dir"] = str(Path(args.out).resolve())
    if args.device is not None:
        overrides["device"] = args.device
    config = load_config(args.config, overrides=overrides)
    if config.task != TASK_SEGMENTATION and get_model_spec(config.model.name).segmentation:
        raise ConfigError(
            f"model.name: {config.model.name} draws masks; set task: segmentation or pick a classifier "
            f"({', '.join(list_models())})"
        )
    if config.task == TASK_SEGMENTATION:
        return _run_segmentation(config, args)
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
            f"checkpoint: {result.best_checkpoint}\nvalidation report: {result.out_dir / 'eval' / 'val'}"
        )
    return 0


def _run_segmentation(config, args: argparse.Namespace) -> int:
    from cxr_core.training.segmentation import train_segmentation

    if args.resume or args.stop_after is not None:
        print(
            "segmentation runs are short and start afresh: --resume and --stop-after do not apply"
        )
        return 2
    result = train_segmentation(config, progress=not args.no_progress)
    dice = result.report["metrics"]["dice"]
    print(
        f"best validation Dice {result.best_metric:.4f} at epoch {result.best_epoch} of {result.epochs_run}"
        f"{' (stopped early)' if result.stopped_early else ''}; {result.wall_time_s:.1f}s of training\n"
        f"validation Dice {dice['mean']:.4f} (95% CI {dice['ci_low']:.4f}-{dice['ci_high']:.4f}, "
        f"{result.report['n_patients']} patients)\n"
        f"checkpoint: {result.best_checkpoint}\nvalidation report: {result.out_dir / 'eval' / 'val'}"
    )
    return 0
