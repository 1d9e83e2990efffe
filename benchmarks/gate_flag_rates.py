"""How often the input gate refuses or warns, per kind of input, for each bundled model.

Goal: at most 5% of validation radiographs flagged, and most non-radiographs refused or
flagged. Inputs per model: its own validation images (a seeded sample), blank frames,
uniform and Gaussian noise, checkerboards, gradients, text-like patterns, synthetic "natural
photos" (1/f noise, the spectrum of natural scenes), and radiographs of the other population
(NIH adult films through the pediatric Kermany models, Kermany pediatric films through the
adult NIH model). The shared data must be beside the clone (or CXR_SHARED_DATA).

    python benchmarks/gate_flag_rates.py --per-kind 40
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cxr_core.artifacts.catalog import resolve_image_path
from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.errors import CXRError
from cxr_core.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CXR_SHARED_DATA", REPO.parent / "shared" / "data"))
DATA = {
    "nih14": SHARED / "nih14",
    "pneumonia": SHARED / "pneumonia" / "chest_xray",
    "pneumonia_type": SHARED / "pneumonia" / "chest_xray",
}
SIZE = 256


def _checkerboard(rng: np.random.Generator) -> np.ndarray:
    cell = int(rng.integers(4, 64))
    return (np.indices((SIZE, SIZE)) // cell).sum(axis=0) % 2 * 1.0


def _gradient(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    g = np.cos(angle) * xx + np.sin(angle) * yy
    return (g - g.min()) / (g.max() - g.min())


def _text(rng: np.random.Generator) -> np.ndarray:
    image = Image.new("L", (SIZE, SIZE), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(image)
    letters = "abcdefghijklmnopqrstuvwxyz  "
    for line in range(int(rng.integers(8, 20))):
        text = "".join(rng.choice(list(letters), size=40))
        draw.text((4, 4 + line * 12), text, fill=int(rng.integers(0, 60)))
    return np.asarray(image, dtype=np.float32) / 255.0


def _natural(rng: np.random.Generator) -> np.ndarray:
    """1/f noise: the power spectrum of natural photographs, without any anatomy."""
    fy, fx = np.meshgrid(np.fft.fftfreq(SIZE), np.fft.fftfreq(SIZE), indexing="ij")
    spectrum = (rng.normal(size=(SIZE, SIZE)) + 1j * rng.normal(size=(SIZE, SIZE))) / np.maximum(
        np.hypot(fx, fy), 1 / SIZE
    )
    field = np.fft.ifft2(spectrum).real
    return (field - field.min()) / (field.max() - field.min())


SYNTHETIC = {
    "blank": lambda rng: np.full((SIZE, SIZE), rng.uniform(0, 1)),
    "uniform noise": lambda rng: rng.random((SIZE, SIZE)),
    "gaussian noise": lambda rng: np.clip(rng.normal(0.5, 0.2, (SIZE, SIZE)), 0, 1),
    "checkerboard": _checkerboard,
    "gradient": _gradient,
    "text-like": _text,
    "1/f 'photo'": _natural,
}


def _validation_images(name: str, count: int, rng: np.random.Generator) -> list[LoadedImage]:
    shipped, _ = load_predictions(REPO / "checkpoints" / name / "eval" / "val" / "predictions.csv")
    rows = shipped.iloc[
        np.sort(rng.choice(len(shipped), size=min(count, len(shipped)), replace=False))
    ]
    return [
        load_image(resolve_image_path(p, i, [DATA[name]]))
        for p, i in zip(rows["path"], rows["image_id"])
    ]


def _rates(predictor: Predictor, images: list) -> tuple[int, int, int]:
    """(refused, warned, total)."""
    refused = warned = 0
    for image in images:
        try:
            warned += bool(predictor.predict([image])[0].warnings)
        except CXRError:
            refused += 1
    return refused, warned, len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=40, help="images per kind of input")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=sorted(DATA), choices=sorted(DATA))
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    validation = {
        name: _validation_images(name, args.per_kind * 2, rng) for name in ("nih14", "pneumonia")
    }
    validation["pneumonia_type"] = validation["pneumonia"]
    for name in args.models:
        predictor = Predictor.from_checkpoint(
            REPO / "checkpoints" / name / "model.safetensors", device="cpu"
        )
        gate = predictor.card.gate
        print(
            f"\n{name}: gate fitted on {gate.get('n_train')} training images, threshold "
            f"{gate.get('distance_threshold', float('nan')):.3f}, "
            f"{100 * gate.get('val_flagged_fraction', float('nan')):.1f}% "
            f"of all {gate.get('n_val')} validation images flagged when fitted"
        )
        print(f"  {'input':<34} {'refused':>8} {'warned':>8} {'either':>8}")
        other = "pneumonia" if name == "nih14" else "nih14"
        kinds = {
            f"validation radiographs ({name})": validation[name],
            f"other population ({'pediatric Kermany' if other == 'pneumonia' else 'adult NIH'})": validation[
                other
            ][: args.per_kind],
        }
        kinds.update(
            {
                kind: [make(rng).astype(np.float32) for _ in range(args.per_kind)]
                for kind, make in SYNTHETIC.items()
            }
        )
        for kind, images in kinds.items():
            refused, warned, total = _rates(predictor, images)
            print(
                f"  {kind:<34} {refused / total:>8.0%} {warned / total:>8.0%} "
                f"{(refused + warned) / total:>8.0%}   (n={total})"
            )
        val_flagged = gate.get("val_flagged_fraction", 1.0)
        print(
            f"  validation flagged at fit time <= 5%: {'met' if val_flagged <= 0.05 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
