"""``cxr import``: turn a state dict trained elsewhere into a cxr checkpoint with a model card."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from cxr_core.data.labels import KNOWN_LABEL_SPACES

    p = subparsers.add_parser(
        "import",
        help="import a .pth/.pt/.safetensors state dict trained elsewhere as a cxr checkpoint",
        description="Reads the tensors safely (never unpickling code), renames known key layouts onto the "
        "architecture (torchvision/timm, DataParallel 'module.', CheXNet 'densenet121.'/'classifier.0', "
        "torchxrayvision DenseNet/ResNet with its operating points), refuses weights that do not fit with the "
        "layers named, and writes OUT/model.safetensors with a model card recording the source file and its "
        "SHA-256. Score it with `cxr evaluate --checkpoint OUT/model.safetensors --data DATASET`.",
    )
    p.add_argument(
        "--weights",
        required=True,
        help=".pth/.pt (read with weights_only) or .safetensors state dict",
    )
    p.add_argument(
        "--arch",
        required=True,
        help="registered architecture the weights belong to (see `cxr train --help`)",
    )
    p.add_argument(
        "--classes",
        required=True,
        help="comma-separated class names, one per output in the model's order, or a label space: "
        + ", ".join(KNOWN_LABEL_SPACES),
    )
    p.add_argument(
        "--task",
        default="multilabel",
        choices=["multilabel", "multiclass"],
        help="with a class list: independent findings (sigmoid) or one class per image (softmax)",
    )
    p.add_argument(
        "--preprocess",
        default="imagenet",
        help="imagenet: ImageNet mean/std (torchvision, timm, CheXNet); xrv: torchxrayvision's 1-channel "
        "[-1024, 1024] input",
    )
    p.add_argument(
        "--input-size", type=int, default=None, help="network input side in pixels (default 224)"
    )
    p.add_argument(
        "--name", default=None, help="label space name for a class list (default: imported)"
    )
    p.add_argument("--out", required=True, help="output folder; receives model.safetensors")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.artifacts.run_dir import RunDir
    from cxr_core.data.labels import KNOWN_LABEL_SPACES, LabelSpace, canonical_name
    from cxr_core.models.importing import import_weights

    if args.classes in KNOWN_LABEL_SPACES:
        label_space = KNOWN_LABEL_SPACES[args.classes]
    else:
        names = tuple(canonical_name(c) for c in args.classes.split(",") if c.strip())
        label_space = LabelSpace(args.name or "imported", names, args.task)
    result = import_weights(
        args.weights,
        args.arch,
        label_space,
        RunDir(args.out).model,
        preprocess=args.preprocess,
        input_size=args.input_size,
    )
    report = result.report
    print(f"wrote {result.path}")
    print(f"  {result.card.provenance}")
    print(
        f"  {args.arch}, {report.in_chans}-channel input, {report.num_outputs} classes: "
        f"{', '.join(label_space.classes)}"
    )
    for step in report.steps or ("keys already matched; nothing renamed",):
        print(f"  {step}")
    if report.defaulted:
        print(
            f"  {len(report.defaulted)} BatchNorm batch counters absent from the file were set to 0"
        )
    if report.operating_points:
        print(
            f"  thresholds from the file's operating points for {len(report.operating_points)} classes"
        )
    return 0
