"""``cxr export``: a checkpoint's whole scoring path as one ONNX or TorchScript file."""

from __future__ import annotations

import argparse

from cxr_core.utils.tasks import TTA_MODES


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint (ensemble members, test-time augmentation, activation) as ONNX or TorchScript",
        description="The exported graph maps the preprocessed tensor (what the Predictor feeds its model) to "
        "probabilities; the preprocessing parameters, class names and thresholds are stored in the file's "
        "metadata (ONNX metadata_props / TorchScript extra file 'cxr_export.json'). With --check-images the "
        "file is compared with the Predictor on those images and removed if any probability differs by more "
        "than 1e-4. ONNX needs `pip install -e .[export]`.",
    )
    p.add_argument("--checkpoint", required=True, help="model .safetensors file")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    p.add_argument("--out", required=True, help="output file (.onnx or .pt)")
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        default=None,
        help="test-time augmentation to build in (default: the model card's)",
    )
    p.add_argument(
        "--check-images",
        nargs="+",
        default=None,
        metavar="PATH",
        help="image files or folders to check parity with the Predictor on (the first 16 images)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cxr_core.data.formats.files import list_image_files
    from cxr_core.data.imaging import load_image
    from cxr_core.data.preprocessing import to_cache_array
    from cxr_core.inference.export import export_checkpoint
    from cxr_core.models.checkpoint import read_model_card

    arrays = None
    if args.check_images:
        cache_size = read_model_card(args.checkpoint).get_preprocess().cache_size
        paths = list_image_files(args.check_images).images[:16]
        arrays = [to_cache_array(load_image(p).pixels, cache_size) for p in paths]
    out, delta = export_checkpoint(
        args.checkpoint, args.format, args.out, parity_batch=arrays, tta=args.tta
    )
    print(
        f"wrote {out}"
        + (
            f" (max |Δp| against the Predictor on {len(arrays)} images: {delta:.2e})"
            if delta is not None
            else ""
        )
    )
    return 0
