"""``cxr predict``: probabilities (and optionally heatmaps) for image files and folders."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from cxr_core.data.imaging import SUPPORTED_EXTENSIONS
from cxr_core.inference.outcome import OUTCOME_LABELS, OUTCOMES, REFUSED, UNREADABLE
from cxr_core.models.tta import TTA_MODES
from cxr_core.utils.csv_safe import SafeCSVWriter

ALL_POSITIVE = "all-positive"
OUTCOME_COLUMNS = ("outcome", "scored_anyway", "reason")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="predict findings for image files or folders",
        description="Writes OUT/predictions.csv (path, one probability column per class, findings, outcome, "
        "scored_anyway, reason, warnings, error). Every file gets a row and one outcome: scored; out_of_domain "
        "(a chest film unlike the training data: another population, a lateral view, an age outside the "
        "training ages; probabilities written, findings left empty unless --score-anyway); refused (not a "
        "chest radiograph: another modality or body part, blank, noise, a photo or document; no probabilities); "
        "unreadable (the file could not be decoded; the error column says why). The run goes on past every "
        "file. With --lungs, also a lung mask per image in OUT/lungs/ (PNG, 0/255, at "
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


def _row(result, classes: tuple[str, ...], lung_dir: Path | None, names: dict[Path, str]) -> list:
    """One CSV row: probabilities only when the gate let the model's numbers through."""
    from cxr_core.inference.lungs import mask_png

    pred = result.prediction
    has_probs = pred is not None and bool(pred.probabilities)
    probabilities = [repr(pred.probabilities[c]) if has_probs else "" for c in classes]
    lung_values = []
    if lung_dir is not None:
        lung_values = ["", ""]
        if (
            result.lungs is not None
        ):  # segmented by the input gate, whose verdict includes its check
            (lung_dir / f"{names[Path(result.path)]}.png").write_bytes(mask_png(result.lungs.mask))
            lung_values = [repr(round(result.lungs.fraction, 6)), result.lungs.check.warning or ""]
    return [
        result.path,
        *probabilities,
        ";".join(pred.positive) if pred is not None else "",
        result.outcome,
        str(pred.scored_anyway).lower() if pred is not None else "false",
        result.reason,
        " | ".join(result.warnings),
        *lung_values,
        result.error,
    ]


def _write_heatmaps(predictor, result, targets: list[str], method: str, stem: Path) -> None:
    """One overlay PNG per explained class, named ``<stem>__<class>.png``."""
    from cxr_core.inference.explain import explain_batch, overlay_png

    maps = explain_batch(predictor, [result.image] * len(targets), targets, method)
    for cls, heatmap in zip(targets, maps):
        png = overlay_png(result.image.pixels, heatmap)
        stem.with_name(f"{stem.name}__{_slug(cls)}.png").write_bytes(png)


def run(args: argparse.Namespace) -> int:
    from cxr_core.inference.explain import method_class
    from cxr_core.inference.predictor import Predictor, collect_image_paths

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
    counts: Counter[str] = Counter()
    with (
        open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle,
        tqdm(total=len(paths), desc="predict", unit="img") as bar,
    ):
        writer = SafeCSVWriter(handle)
        writer.writerow(
            ["path", *classes, "findings", *OUTCOME_COLUMNS, "warnings", *lung_columns, "error"]
        )
        results = predictor.iter_predict_files(
            paths,
            batch_size=args.batch_size,
            workers=args.workers,
            keep_images=args.heatmaps,
            score_anyway=args.score_anyway,
        )
        for result in results:
            counts[result.outcome] += 1
            writer.writerow(_row(result, classes, lung_dir if lungs is not None else None, names))
            if args.heatmaps and result.image is not None and result.prediction.probabilities:
                targets = [explain_class] if explain_class else result.prediction.positive
                _write_heatmaps(
                    predictor, result, targets, args.method, heat_dir / names[Path(result.path)]
                )
            result.image = result.lungs = None
            handle.flush()
            bar.update(1)
    print(
        f"wrote {out / 'predictions.csv'}: {len(paths)} images: "
        + ", ".join(f"{counts[o]} {OUTCOME_LABELS[o]}" for o in OUTCOMES),
        file=sys.stderr,
    )
    errors = counts[REFUSED] + counts[UNREADABLE]
    return 1 if errors == len(paths) else 0
