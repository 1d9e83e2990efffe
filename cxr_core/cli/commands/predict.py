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


def _load_predictor(args: argparse.Namespace):
    """The checkpoint's Predictor, with the lung model ``--lungs`` names."""
    from cxr_core.inference.predictor import Predictor

    lungs = None
    if args.lungs is not None:
        from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

        lungs = LungSegmenter.from_path(
            DEFAULT_LUNG_CHECKPOINT if args.lungs == "bundled" else args.lungs, device=args.device
        )
    return Predictor.from_checkpoint(args.checkpoint, device=args.device, tta=args.tta, lungs=lungs)


def _prediction_row(result, classes, lung_mask_path: Path | None) -> list:
    """A scored file's row; its lung mask (segmented by the input gate, whose warnings include
    its check) is written to ``lung_mask_path``."""
    from cxr_core.inference.lungs import mask_png

    pred = result.prediction
    lung_values = []
    if result.lungs is not None and lung_mask_path is not None:
        lung_mask_path.write_bytes(mask_png(result.lungs.mask))
        lung_values = [repr(round(result.lungs.fraction, 6)), result.lungs.check.warning or ""]
    return [
        result.path,
        *(repr(pred.probabilities[c]) for c in classes),
        ";".join(pred.positive),
        " | ".join(pred.warnings),
        *lung_values,
        "",
    ]


def _write_heatmaps(predictor, result, targets, method: str, heat_dir: Path, name: str) -> None:
    from cxr_core.inference.explain import explain_batch, overlay_png

    maps = explain_batch(predictor, [result.image] * len(targets), targets, method)
    for cls, heatmap in zip(targets, maps):
        png = overlay_png(result.image.pixels, heatmap)
        (heat_dir / f"{name}__{_slug(cls)}.png").write_bytes(png)


def run(args: argparse.Namespace) -> int:
    from cxr_core.inference.explain import method_class
    from cxr_core.inference.predictor import collect_image_paths

    if args.heatmaps:
        method_class(args.method)  # an unknown method fails before the model is loaded
    paths = collect_image_paths(args.paths, SUPPORTED_EXTENSIONS)
    predictor = _load_predictor(args)
    classes = predictor.classes
    explain_class = None
    if args.heatmaps and args.class_name != ALL_POSITIVE:
        explain_class = classes[predictor.label_space.index(args.class_name)]

    out = Path(args.out)
    heat_dir, lung_dir = out / "heatmaps", out / "lungs"
    (heat_dir if args.heatmaps else out).mkdir(parents=True, exist_ok=True)
    with_lungs = args.lungs is not None
    if with_lungs:
        lung_dir.mkdir(exist_ok=True)
    lung_columns = ["lung_fraction", "lung_warning"] if with_lungs else []
    names = _heatmap_names(paths)
    errors = warned = 0
    with (
        open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle,
        tqdm(total=len(paths), desc="predict", unit="img") as bar,
    ):
        writer = SafeCSVWriter(handle)
        writer.writerow(["path", *classes, "findings", "warnings", *lung_columns, "error"])
        results = predictor.iter_predict_files(
            paths, batch_size=args.batch_size, workers=args.workers, keep_images=args.heatmaps
        )
        for result in results:
            name = names[Path(result.path)]
            if result.prediction is None:
                errors += 1
                blank = [""] * (len(classes) + 2 + len(lung_columns))
                writer.writerow([result.path, *blank, result.error])
            else:
                warned += bool(result.prediction.warnings)
                lung_path = lung_dir / f"{name}.png" if with_lungs else None
                writer.writerow(_prediction_row(result, classes, lung_path))
                if args.heatmaps:
                    targets = [explain_class] if explain_class else result.prediction.positive
                    _write_heatmaps(predictor, result, targets, args.method, heat_dir, name)
                result.image = result.lungs = None
            handle.flush()
            bar.update(1)
    print(
        f"wrote {out / 'predictions.csv'}: {len(paths)} images, {errors} unreadable or refused, "
        f"{warned} with warnings",
        file=sys.stderr,
    )
    return 1 if errors == len(paths) else 0
