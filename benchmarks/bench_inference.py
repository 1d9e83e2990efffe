"""Single-image latency: bare forward pass vs Predictor (file → probabilities) vs + one heatmap.

Goal: a prediction from a PNG costs at most 1.3x the bare forward pass of the same model on an
already prepared tensor (decode + preprocessing + bookkeeping overhead ≤ 30%). The three are
timed round-robin in one process so machine load affects them alike; medians are reported.

    python benchmarks/bench_inference.py                      # random-init DenseNet121 at 224 px
    python benchmarks/bench_inference.py --checkpoint ckpt.safetensors --runs 30
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.inference.explain import explain
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model, get_model_spec
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE_DIR = REPO.parent / "shared" / "data" / "nih14" / "images"


def random_checkpoint(arch: str, size: int, folder: Path) -> Path:
    """A random-init model saved as a real checkpoint, so the Predictor path is the production one."""
    spec = get_model_spec(arch)
    preprocess = PreprocessConfig(
        cache_size=256, input_size=size, mean=spec.input_mean, std=spec.input_std, in_chans=3
    )
    card = ModelCard(
        architecture=arch,
        num_classes=NIH14.num_classes,
        label_space=NIH14.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=3,
    )
    return save_checkpoint(
        folder / f"{arch}.safetensors", create_model(arch, NIH14.num_classes).state_dict(), card
    )


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="model .safetensors (default: random-init --arch)")
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument(
        "--size", type=int, default=224, help="input size for the random-init model"
    )
    parser.add_argument(
        "--image", help="a PNG/JPEG/DICOM (default: first NIH image in ../shared/data)"
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    image_path = (
        Path(args.image)
        if args.image
        else next(iter(sorted(DEFAULT_IMAGE_DIR.glob("*.png"))), None)
    )
    if image_path is None or not image_path.is_file():
        print(f"no image found; pass --image (looked in {DEFAULT_IMAGE_DIR})", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = (
            Path(args.checkpoint)
            if args.checkpoint
            else random_checkpoint(args.arch, args.size, Path(tmp))
        )
        predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    model = predictor.model
    tensor = predictor.prepare([load_image(image_path)])
    top_class = predictor.classes[0]

    def bare() -> None:
        with torch.inference_mode():
            model(tensor)

    def predict() -> None:
        predictor.predict([load_image(image_path)])

    def predict_and_explain() -> None:
        image = load_image(image_path)
        predictor.predict([image])
        explain(predictor, image, top_class, method=args.method)

    cases = {
        "bare forward (prepared tensor)": bare,
        "Predictor: file -> probabilities": predict,
        f"Predictor + {args.method}": predict_and_explain,
    }
    for fn in cases.values():  # warm-up (allocator, explanation model copy, lazy imports)
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, fn in cases.items():
            times[name].append(timed(fn))

    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["bare forward (prepared tensor)"]
    print(
        f"model {predictor.architecture} at {predictor.preprocess.input_size}px, image {image_path.name}, "
        f"{args.runs} runs, torch threads {torch.get_num_threads()}"
    )
    print(f"{'case':<36}{'median ms':>12}{'ratio':>9}")
    for name, value in medians.items():
        print(f"{name:<36}{value:>12.1f}{value / base:>8.2f}x")
    ratio = medians["Predictor: file -> probabilities"] / base
    print(
        f"goal prediction <= 1.30x bare forward: {'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
