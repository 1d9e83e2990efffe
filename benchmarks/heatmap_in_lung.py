"""Share of a classifier's heatmap mass that falls inside the lungs, on its own validation images.

The plausibility number of ``cxr explain-eval --lungs`` without needing boxes: a seeded sample of
the checkpoint's validation split (rebuilt from its card, as ``cxr evaluate`` does) is explained
for one class with ``--method`` (default ``gradcam``, as ``cxr explain-eval``), and each map's
mass inside the lungs is measured with :func:`cxr_core.inference.lungs.heatmap_mass_in_mask`
against the bundled lung model's mask of the image itself (not dilated). Reported: the mean
with a 95% bootstrap interval over images, the mean per true class, and the mean share of the
image that is lung (what a map spread evenly over the film would score). A map that is zero
everywhere (Grad-CAM finds no evidence for the class, common on films of the other class) has no
mass to place and is counted apart (``empty_maps``), not in the means.

How the issue-18 experiment compared the bundled pneumonia model with its lung-masked twin:

    python benchmarks/heatmap_in_lung.py --checkpoint checkpoints/pneumonia/model.safetensors --class Pneumonia
    python benchmarks/heatmap_in_lung.py --class Pneumonia \
        --checkpoint runs/experiments/pneumonia_lungmask/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cxr_core.data.imaging import load_image
from cxr_core.inference.explain import explain_batch
from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter, heatmap_mass_in_mask
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import read_model_card
from cxr_core.training.data_setup import build_manifest, data_config_of


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument(
        "--class", dest="class_name", required=True, help="the class whose evidence is mapped"
    )
    parser.add_argument("--n", type=int, default=100, help="validation images (seeded sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="gradcam")
    parser.add_argument("--data", help="dataset folder, when the card's is not on this machine")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)

    checkpoint = Path(args.checkpoint)
    card = read_model_card(checkpoint)
    val = build_manifest(data_config_of(card, checkpoint=checkpoint, path=args.data)).split("val")
    frame = val.frame.sample(n=min(args.n, len(val)), random_state=args.seed).sort_index()
    truth = np.asarray(val.labels())[val.frame.index.get_indexer(frame.index)].argmax(axis=1)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    lungs = LungSegmenter.from_path(DEFAULT_LUNG_CHECKPOINT)
    started = time.perf_counter()
    shares, lung_fractions = [], []
    paths = frame["path"].tolist()
    for first in range(0, len(paths), args.batch_size):
        images = [load_image(p) for p in paths[first : first + args.batch_size]]
        maps = explain_batch(predictor, images, [args.class_name] * len(images), args.method)
        for image, heatmap in zip(images, maps):
            mask = lungs.segment(image.pixels).mask
            shares.append(heatmap_mass_in_mask(heatmap, mask))
            lung_fractions.append(float(mask.mean()))
    shares_arr = np.asarray(shares)
    rng = np.random.default_rng(args.seed)
    boot = [
        np.nanmean(shares_arr[rng.integers(0, len(shares_arr), len(shares_arr))])
        for _ in range(2000)
    ]
    print(
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "method": args.method,
                "class": args.class_name,
                "images": len(shares),
                "empty_maps": int(
                    np.isnan(shares_arr).sum()
                ),  # no evidence for the class anywhere: left out of the means
                "mean_in_lung": float(np.nanmean(shares_arr)),
                "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
                "by_true_class": {
                    c: {
                        "images": int((truth == i).sum()),
                        "mean_in_lung": float(np.nanmean(shares_arr[truth == i])),
                    }
                    for i, c in enumerate(val.classes)
                    if np.isfinite(shares_arr[truth == i]).any()
                },
                "mean_lung_share_of_image": float(np.mean(lung_fractions)),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
