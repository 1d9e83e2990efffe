"""``cxr predict``: probabilities (and optionally heatmaps) for image files and folders."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from cxr_core.data.imaging import SUPPORTED_EXTENSIONS
from cxr_core.models.tta import TTA_MODES
from cxr_core.utils.csv_safe import SafeCSVWriter

ALL_POSITIVE = "all-positive"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict findings for image files or folders",
        description="Writes OUT/predictions.csv (path, one probability column per class, findings, warnings, error); "
        "unreadable or refused files (blank, too small) get their error in their row and the run goes on; "
        "the input gate's warnings (not a chest radiograph, lateral view, age or image unlike the training data) "
        "are listed in the warnings column. With --lungs, also a lung mask per image in OUT/lungs/ (PNG, 0/255, at "
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


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def _heatmap_names(paths: list[Path]) -> dict[Path, str]:
    """File stem per image, suffixed with its row number only where stems collide."""
    counts = Counter(p.stem for p in paths)
    return {
        p: _slug(p.stem) if counts[p.stem] == 1 else f"{_slug(p.stem)}_{i + 1}"
        for i, p in enumerate(paths)
    }


def run(args: argparse.Namespace) -> int:
    from cxr_core.inference.explain import explain_batch, method_class, overlay_png
    from cxr_core.inference.lungs import mask_png
    from cxr_core.inference.predictor import Predictor, collect_image_paths
    from cxr_core.reporting.export import exporter_for

    if args.heatmaps:
        method_class(args.method)  # an unknown method fails before the model is loaded
    paths = collect_image_paths(args.paths, SUPPORTED_EXTENSIONS)
    lungs = None
    if args.lungs is not None:
        from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

        lungs = LungSegmenter.from_path(
            DEFAULT_LUNG_CHECKPOINT if args.lungs == "bundled" else args.lungs, device=args.device
        )
    predictor = Predictor.from_checkpoint(
        args.checkpoint, device=args.device, tta=args.tta, lungs=lungs
    )
    exporter = exporter_for(predictor, args.checkpoint, args.dicom_out, args.pdf_out, lungs)
    classes = predictor.classes
    explain_class = None
    if args.heatmaps and args.class_name != ALL_POSITIVE:
        explain_class = classes[predictor.label_space.index(args.class_name)]

    out = Path(args.out)
    heat_dir, lung_dir = out / "heatmaps", out / "lungs"
    (heat_dir if args.heatmaps else out).mkdir(parents=True, exist_ok=True)
    if lungs is not None:
        lung_dir.mkdir(exist_ok=True)
    lung_columns = ["lung_fraction", "lung_warning"] if lungs is not None else []
    names = _heatmap_names(paths)
    errors = warned = 0
    with (
        open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle,
        tqdm(total=len(paths), desc="predict", unit="img") as bar,
    ):
        writer = SafeCSVWriter(handle)
        writer.writerow(["path", *classes, "findings", "warnings", *lung_columns, "error"])
        results = predictor.iter_predict_files(
            paths,
            batch_size=args.batch_size,
            workers=args.workers,
            keep_images=args.heatmaps or exporter is not None,
        )
        for result in results:
            if exporter is not None:
                exporter.export(result)
            if result.prediction is None:
                errors += 1
                writer.writerow(
                    [
                        result.path,
                        *([""] * len(classes)),
                        "",
                        "",
                        *([""] * len(lung_columns)),
                        result.error,
                    ]
                )
            else:
                pred = result.prediction
                if pred.warnings:
                    warned += 1
                lung_values = []
                if (
                    result.lungs is not None
                ):  # segmented by the input gate, whose warnings include its check
                    (lung_dir / f"{names[Path(result.path)]}.png").write_bytes(
                        mask_png(result.lungs.mask)
                    )
                    lung_values = [
                        repr(round(result.lungs.fraction, 6)),
                        result.lungs.check.warning or "",
                    ]
                writer.writerow(
                    [
                        result.path,
                        *(repr(pred.probabilities[c]) for c in classes),
                        ";".join(pred.positive),
                        " | ".join(pred.warnings),
                        *lung_values,
                        "",
                    ]
                )
                if args.heatmaps:
                    targets = [explain_class] if explain_class else pred.positive
                    maps = explain_batch(
                        predictor, [result.image] * len(targets), targets, args.method
                    )
                    for cls, heatmap in zip(targets, maps):
                        png = overlay_png(result.image.pixels, heatmap)
                        (heat_dir / f"{names[Path(result.path)]}__{_slug(cls)}.png").write_bytes(
                            png
                        )
                result.image = result.lungs = None
            handle.flush()
            bar.update(1)
    if exporter is not None:
        exporter.close()
    print(
        f"wrote {out / 'predictions.csv'}: {len(paths)} images, {errors} unreadable or refused, "
        f"{warned} with warnings",
        file=sys.stderr,
    )
    return 1 if errors == len(paths) else 0
