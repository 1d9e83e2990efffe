"""``cxr gate fit``: stamp input-gate statistics (training-feature distribution) into a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr_core.cli.options import add_card_data_options, add_compute_options


def register(subparsers: argparse._SubParsersAction) -> None:
    gate = subparsers.add_parser(
        "gate", help="the input gate that flags images unlike the training data"
    )
    sub = gate.add_subparsers(dest="gate_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "fit",
        help="fit the gate's reference statistics and store them in the checkpoint",
        description="Rebuilds the checkpoint's dataset and splits as `cxr evaluate` does, measures the pooled "
        "penultimate features of the training images (mean + top principal directions) and sets the distance "
        "threshold so that 5%% of validation images are flagged. Also records the training age range when the "
        "data carry ages. The weights and the other model-card fields are left unchanged.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="model .safetensors file (rewritten in place, atomically)",
    )
    add_card_data_options(p, formats=False)
    p.add_argument("--dims", type=int, default=64, help="principal directions kept (default 64)")
    p.add_argument(
        "--max-train", type=int, default=2000, help="training images sampled for the statistics"
    )
    add_compute_options(p, progress=False)
    p.set_defaults(handler=_fit)


def _fit(args: argparse.Namespace) -> int:
    from cxr_core.inference.gate import fit_checkpoint_gate
    from cxr_core.models.checkpoint import read_model_card
    from cxr_core.training.data_setup import build_manifest, data_config_of

    checkpoint = Path(args.checkpoint)
    data = data_config_of(
        read_model_card(checkpoint), checkpoint=checkpoint, path=args.data, cache_dir=args.cache_dir
    )
    section = fit_checkpoint_gate(
        checkpoint,
        build_manifest(data),
        data.cache_dir,
        dims=args.dims,
        max_train=args.max_train,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(
        f"{checkpoint}: gate fitted on {section['n_train']} training images ({section['dims']} directions of "
        f"{section['feature_size']} features); {100 * section['val_flagged_fraction']:.1f}% of "
        f"{section['n_val']} validation images flagged; training ages: {section['age_range'] or 'not recorded'}"
    )
    return 0
