"""``cxr gate fit``: fit a checkpoint's input gate (refusal and out-of-domain detectors) and stamp it in."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr_core.cli.options import add_card_data_options, add_compute_options


def register(subparsers: argparse._SubParsersAction) -> None:
    gate = subparsers.add_parser(
        "gate",
        help="the input gate that refuses non-chest images and flags films unlike the training data",
    )
    sub = gate.add_subparsers(dest="gate_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "fit",
        help="fit the gate's detectors and store them in the checkpoint",
        description="Rebuilds the checkpoint's dataset and splits as `cxr evaluate` does and fits two multi-layer "
        "feature Mahalanobis detectors: 'domain' on the training images, thresholded so that 2%% of validation "
        "images are out of domain; 'chest' on the training images plus the --reference folders (chest films of "
        "other populations), thresholded above the most unusual real film, so that what lies beyond is refused "
        "as not a chest radiograph. Records the detector, thresholds and measured rates (validation images, "
        "each reference folder) in the model card, and the training age range when the data carry ages. The "
        "weights and the other model-card fields are left unchanged.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="model .safetensors file (rewritten in place, atomically)",
    )
    add_card_data_options(p, formats=False)
    p.add_argument(
        "--reference",
        nargs="+",
        default=[],
        metavar="FOLDER",
        help="folders of chest radiographs of other populations (searched recursively; up to 600 "
        "sampled each): films there must never be refused, and their out-of-domain rate is recorded",
    )
    p.add_argument(
        "--dims", type=int, default=32, help="principal directions per layer (default 32)"
    )
    p.add_argument(
        "--max-train", type=int, default=2000, help="training images sampled for the statistics"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the image samples")
    add_compute_options(p, progress=False)
    p.set_defaults(handler=_fit)


def _fit(args: argparse.Namespace) -> int:
    from cxr_core.inference.gate_fit import fit_checkpoint_gate
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
        references=args.reference,
        dims=args.dims,
        max_train=args.max_train,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
    )
    counts, rates = section["counts"], section["rates"]
    lines = [
        f"{checkpoint}: gate fitted on {counts['train']} training images ({len(section['layers'])} layers); "
        f"validation: {_pct(rates['validation'])}; training ages: {section['age_range'] or 'not recorded'}"
    ]
    lines += [f"  reference {name}: {_pct(r)}" for name, r in rates["references"].items()]
    print("\n".join(lines))
    return 0


def _pct(rates: dict) -> str:
    return (
        f"{100 * rates['out_of_domain']:.1f}% out of domain, {100 * rates['refused']:.1f}% refused "
        f"of {rates['images']}"
    )
