"""``cxr explain-eval``: score heatmaps against radiologists' boxes (NIH, RSNA Pneumonia, VinDr-CXR;
pointing game, IoU)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain-eval",
        help="check heatmaps against radiologist bounding boxes",
        description="For every box whose finding the model predicts: pointing-game hit (heatmap maximum inside "
        "the box), IoU of the heatmap above --level with the box, and the hit rate of a pointer that always "
        "picks the image centre, per class and overall. With --lungs, also the mean share of each heatmap's "
        "mass inside the lungs (mean_in_lung).",
    )
    p.add_argument("--checkpoint", required=True, help="model .safetensors file")
    _add_box_source(p)
    p.add_argument("--method", default="gradcam", help="explanation method (default gradcam)")
    p.add_argument(
        "--layer",
        help="module to read, a dotted path inside the model or each ensemble member "
        "(e.g. features.5); default: the architecture's registered layer",
    )
    p.add_argument(
        "--border",
        type=float,
        nargs="+",
        help="fraction(s) of each image side masked out of the map, "
        "each scored on the same maps (0 = none; default: the dashboard's)",
    )
    p.add_argument(
        "--mask-text",
        choices=("on", "off"),
        nargs="+",
        help="leave burned-in text and markers out "
        "of the map too (on) or not (off); 'off on' scores both on the same maps (default: the dashboard's, on)",
    )
    p.add_argument(
        "--sample", type=int, help="score a seeded random sample of N boxes (quick runs)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --sample")
    p.add_argument(
        "--level", type=float, default=0.5, help="heatmap level (fraction of its maximum) for IoU"
    )
    p.add_argument(
        "--original-size",
        type=int,
        default=1024,
        help="with --bbox: pixel size the box coordinates refer to (--boxes tables carry their own)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", help="optional CSV file for the per-box results")
    p.add_argument(
        "--lungs",
        nargs="?",
        const="bundled",
        default=None,
        metavar="CHECKPOINT",
        help="lung model for the in-lung share of heatmap mass (default model: the bundled checkpoints/lungs)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(handler=run)


def _add_box_source(p: argparse.ArgumentParser) -> None:
    """NIH's box list with its image folder, or any dataset whose format has boxes."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--bbox", help="NIH BBox_List_2017.csv (with --images)")
    source.add_argument(
        "--boxes",
        help="a dataset whose format has boxes (NIH folder, RSNA Pneumonia, VinDr-CXR label file or "
        "folder); its images are found as cxr data inspect finds them",
    )
    p.add_argument("--images", help="with --bbox: folder holding the boxed images (by file name)")
    p.add_argument(
        "--format", default="auto", help="with --boxes: the dataset's format (default: detect)"
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --boxes: a box option of the format, repeatable (VinDr-CXR: boxes=per_reader, "
        "consensus=majority; images_dir=FOLDER)",
    )


def run(args: argparse.Namespace) -> int:
    from cxr_core.errors import ConfigError
    from cxr_core.inference.explain import method_class
    from cxr_core.inference.localisation import evaluate_localisation, load_bboxes
    from cxr_core.inference.predictor import Predictor
    from cxr_core.utils.csv_safe import write_frame_csv

    method_class(args.method)
    if not 0.0 < args.level <= 1.0:
        raise ConfigError(f"--level must lie in (0, 1], not {args.level}")
    if args.bbox and not args.images:
        raise ConfigError(
            "--bbox names images by file name: pass --images, the folder holding them"
        )
    boxes = load_bboxes(args.bbox) if args.bbox else _box_table(args)
    if args.sample and args.sample < len(boxes):
        boxes = boxes.sample(n=args.sample, random_state=args.seed).sort_index()
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device)
    lungs = None
    if args.lungs is not None:
        from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

        lungs = LungSegmenter.from_path(
            DEFAULT_LUNG_CHECKPOINT if args.lungs == "bundled" else args.lungs, device=args.device
        )
    result = evaluate_localisation(
        predictor,
        boxes,
        args.images,
        method=args.method,
        layer=args.layer,
        borders=args.border,
        mask_text=[value == "on" for value in args.mask_text] if args.mask_text else None,
        level=args.level,
        batch_size=args.batch_size,
        original_size=args.original_size,
        lungs=lungs,
    )
    print(
        f"{args.method} at {args.layer or 'the registered layer'}, {len(boxes)} boxes of {args.bbox or args.boxes} "
        f"(IoU at level {args.level})"
    )
    print(result.format_table())
    for reason, count in result.skipped.items():
        if count:
            print(f"skipped {count} boxes: {reason}", file=sys.stderr)
    if args.out:
        write_frame_csv(result.per_box, args.out)
    return 0


def _box_table(args: argparse.Namespace):
    from cxr_core.cli.options import parse_adapter_options
    from cxr_core.data.formats import load_box_table

    return load_box_table(args.boxes, args.format, **parse_adapter_options(args.option))
