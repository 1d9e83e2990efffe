"""``cxr predict``: probabilities (and optionally heatmaps) for image files and folders."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxr_core.errors import ConfigError
from cxr_core.inference.outcome import OUTCOME_LABELS, OUTCOMES, REFUSED, UNREADABLE
from cxr_core.utils.tasks import TTA_MODES

ALL_POSITIVE = "all-positive"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict findings for image files or folders",
        description="Writes OUT/predictions.csv, the project's one prediction table (image_id, path, patient_id, "
        "outcome, scored_anyway, reason, findings, prob:<class>..., threshold:<class>..., warnings, error); folders "
        "are searched by content, so extensionless DICOM files are found, and other files are counted in the summary. "
        "Every file gets a row and one outcome: scored; out_of_domain (a chest film unlike the training data: another "
        "population, a lateral view, an age outside the training ages; probabilities written, findings left empty "
        "unless --score-anyway); refused (not a chest radiograph: another modality or body part, blank, noise, a photo "
        "or document; no probabilities); unreadable (the file could not be decoded). The reason column says why; the "
        "run goes on past every file. With --lungs, also a lung mask per image in OUT/lungs/ (PNG, 0/255, at "
        "the image's size) and the columns lung_fraction (share of the image inside the lungs) and lung_warning "
        "(set when the image does not look like a frontal chest radiograph: lung area outside the range of frontal "
        "films, or not two lungs side by side); the lung warning is also one of the gate's warnings.",
    )
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)"
    )
    p.add_argument("--checkpoint", required=True, help="model .safetensors file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--heatmaps", action="store_true", help="also write heatmap overlays to OUT/heatmaps/"
    )
    p.add_argument(
        "--method",
        default="gradcam",
        help="explanation method: gradcam (default), gradcam++, xgradcam, layercam, eigencam, scorecam",
    )
    p.add_argument(
        "--class",
        dest="class_name",
        default=ALL_POSITIVE,
        help=f"class to explain, or '{ALL_POSITIVE}' for every positive finding (default)",
    )
    p.add_argument(
        "--lungs",
        nargs="?",
        const="bundled",
        default=None,
        metavar="CHECKPOINT",
        help="also segment the lungs (default model: the bundled checkpoints/lungs)",
    )
    p.add_argument(
        "--score-anyway",
        action="store_true",
        help="also call the findings of out-of-domain films (recorded as scored_anyway in their rows)",
    )
    p.add_argument(
        "--dicom-out",
        default=None,
        metavar="DIR",
        help="also write DICOM results for DICOM inputs: an SR of the findings, a Secondary Capture of the "
        "called findings' overlay, a SEG of the lung mask with --lungs (DIR/<file>/, listed in DIR/index.csv)",
    )
    p.add_argument(
        "--pdf-out", default=None, metavar="DIR", help="also write a one-page PDF report per image"
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--workers", type=int, default=2, help="threads decoding images while the model runs"
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation: none, or hflip (average with the mirrored image); "
        "default: what the model card's validation numbers used",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.cli.processes import run_processes
    from cxr_core.inference.batch_run import Explanations, predict_to_table
    from cxr_core.inference.explain import method_class
    from cxr_core.inference.predictor import Predictor
    from cxr_core.reporting.export import exporter_for

    if args.heatmaps:
        method_class(args.method)  # an unknown method fails before the model is loaded
    explain = None
    if args.heatmaps:
        explain = Explanations(
            args.method, None if args.class_name == ALL_POSITIVE else args.class_name
        )
    with run_processes(args.device) as ctx:
        lungs = lungs_path = None
        if args.lungs is not None:
            from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

            lungs_path = DEFAULT_LUNG_CHECKPOINT if args.lungs == "bundled" else args.lungs
            lungs = LungSegmenter.from_path(lungs_path, device=ctx.device)
        predictor = Predictor.from_checkpoint(
            args.checkpoint, device=ctx.device, tta=args.tta, lungs=lungs
        )
        if explain is not None and explain.class_name is not None:
            predictor.label_space.index(
                explain.class_name
            )  # an unknown class fails before any work
        exporter = exporter_for(predictor, args.checkpoint, args.dicom_out, args.pdf_out, lungs)
        if exporter is not None and ctx.world_size > 1:
            raise ConfigError(
                "--dicom-out and --pdf-out write one index of the whole run: start this cxr "
                "predict as one process (without torchrun), or score with torchrun first and "
                "without those options"
            )
        identity = {
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "tta": predictor.tta,
            "score_anyway": args.score_anyway,
            "lungs": str(Path(lungs_path).resolve()) if lungs_path is not None else None,
        }
        summary = predict_to_table(
            predictor,
            args.paths,
            args.out,
            ranks=ctx,
            batch_size=args.batch_size,
            workers=args.workers,
            explain=explain,
            identity=identity,
            progress=ctx.is_main,
            each_result=exporter.export if exporter is not None else None,
            score_anyway=args.score_anyway,
            resume=exporter is None,
        )
        if exporter is not None:
            exporter.close()
    if summary is None:  # another process writes the table and the summary
        return 0
    skipped = f"; {summary.skipped} (no row)" if summary.skipped else ""
    print(
        f"wrote {summary.table}: {summary.images} images: "
        + ", ".join(f"{summary.outcomes[o]} {OUTCOME_LABELS[o]}" for o in OUTCOMES)
        + skipped,
        file=sys.stderr,
    )
    return 1 if summary.outcomes[REFUSED] + summary.outcomes[UNREADABLE] == summary.images else 0
