"""``cxr predict``: probabilities (and optionally heatmaps) for image files and folders."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from cxr_core.inference.outcome import OUTCOME_LABELS, OUTCOMES, REFUSED, UNREADABLE
from cxr_core.models.tta import TTA_MODES

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
    from cxr_core.artifacts.prediction_table import write_prediction_table
    from cxr_core.data.formats.files import list_image_files
    from cxr_core.inference.explain import method_class
    from cxr_core.inference.predictor import Predictor
    from cxr_core.reporting.export import exporter_for

    if args.heatmaps:
        method_class(args.method)  # an unknown method fails before the model is loaded
    listing = list_image_files(args.paths)
    paths = listing.images
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
    explain_class = None
    if args.heatmaps and args.class_name != ALL_POSITIVE:
        explain_class = predictor.classes[predictor.label_space.index(args.class_name)]

    out = Path(args.out)
    (out / "heatmaps" if args.heatmaps else out).mkdir(parents=True, exist_ok=True)
    if lungs is not None:
        (out / "lungs").mkdir(exist_ok=True)
    counts: Counter[str] = Counter()
    rows = _rows(args, predictor, paths, out, explain_class, lungs is not None, counts, exporter)
    write_prediction_table(
        out / "predictions.csv",
        predictor.classes,
        rows,
        labels=False,
        thresholds=predictor.label_space.multilabel,
        extra=LUNG_COLUMNS if lungs is not None else (),
    )
    if exporter is not None:
        exporter.close()
    skipped = f"; {listing.summary()} (no row)" if listing.skipped else ""
    print(
        f"wrote {out / 'predictions.csv'}: {len(paths)} images: "
        + ", ".join(f"{counts[o]} {OUTCOME_LABELS[o]}" for o in OUTCOMES)
        + skipped,
        file=sys.stderr,
    )
    return 1 if counts[REFUSED] + counts[UNREADABLE] == len(paths) else 0


LUNG_COLUMNS = ("lung_fraction", "lung_warning")


def _rows(args, predictor, paths, out, explain_class, with_lungs, counts, exporter) -> Iterator:
    """One table row per file, as the predictor yields them, writing heatmaps, lung masks and
    (with an exporter) DICOM results and PDF reports."""
    from cxr_core.inference.explain import explain_batch, overlay_png
    from cxr_core.inference.lungs import mask_png
    from cxr_core.inference.table_rows import file_row

    names = _heatmap_names(paths)
    multilabel = predictor.label_space.multilabel
    results = predictor.iter_predict_files(
        paths,
        batch_size=args.batch_size,
        workers=args.workers,
        keep_images=args.heatmaps or exporter is not None,
        score_anyway=args.score_anyway,
    )
    for result in tqdm(results, total=len(paths), desc="predict", unit="img"):
        if exporter is not None:
            exporter.export(result)
        extra = dict.fromkeys(LUNG_COLUMNS, "") if with_lungs else {}
        pred = result.prediction
        counts[result.outcome] += 1
        if (
            result.lungs is not None
        ):  # segmented by the input gate, whose warnings include its check
            (out / "lungs" / f"{names[Path(result.path)]}.png").write_bytes(
                mask_png(result.lungs.mask)
            )
            extra = {
                "lung_fraction": repr(round(result.lungs.fraction, 6)),
                "lung_warning": result.lungs.check.warning or "",
            }
        if pred is not None and pred.probabilities and args.heatmaps:
            targets = [explain_class] if explain_class else pred.positive
            maps = explain_batch(predictor, [result.image] * len(targets), targets, args.method)
            for cls, heatmap in zip(targets, maps):
                png = overlay_png(result.image.pixels, heatmap)
                name = f"{names[Path(result.path)]}__{_slug(cls)}.png"
                (out / "heatmaps" / name).write_bytes(png)
        yield file_row(result, multilabel=multilabel, extra=extra)
        result.image = result.lungs = None
