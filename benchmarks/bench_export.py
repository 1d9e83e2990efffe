"""ONNX Runtime (CPU) vs eager PyTorch on the exported scoring path, plus parity on real images.

Goal: the exported ONNX graph scores a prepared batch at least as fast as the Predictor's eager
PyTorch model on this CPU (median latency ratio ORT / eager ≤ 1.0), with max |Δp| ≤ 1e-4 on
real radiographs. Both are timed round-robin in one process, same threads, same batches, so
machine load affects them alike; medians are reported.

    python benchmarks/bench_export.py                                   # bundled pneumonia model
    python benchmarks/bench_export.py --checkpoint checkpoints/nih14/model.safetensors --runs 10
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
from cxr_core.data.preprocessing import to_cache_array
from cxr_core.inference.export import PARITY_TOLERANCE, export_checkpoint, load_exported
from cxr_core.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = REPO / "checkpoints" / "pneumonia" / "model.safetensors"
DEFAULT_IMAGE_DIR = REPO.parent / "shared" / "data" / "nih14" / "images"
GOAL_RATIO = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument(
        "--images", default=str(DEFAULT_IMAGE_DIR), help="folder of real radiographs"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    paths = sorted(Path(args.images).glob("*.png"))[: args.batch]
    if not paths:
        print(f"no images in {args.images}", file=sys.stderr)
        return 2
    predictor = Predictor.from_checkpoint(args.checkpoint, device="cpu")
    arrays = [to_cache_array(load_image(p).pixels, predictor.preprocess.cache_size) for p in paths]
    batch = predictor.tensor_from_cache_arrays(arrays)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out, delta = export_checkpoint(
            args.checkpoint, "onnx", Path(tmp) / "model.onnx", parity_batch=arrays
        )
        export_s = time.perf_counter() - start
        run, _ = load_exported(out)
        numpy_batch = batch.numpy()
        for _ in range(2):  # warm-up both
            predictor.probabilities_of(batch)
            run(numpy_batch)
        eager, onnx = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            predictor.probabilities_of(batch)
            eager.append(time.perf_counter() - t)
            t = time.perf_counter()
            run(numpy_batch)
            onnx.append(time.perf_counter() - t)
    eager_ms, onnx_ms = 1000 * statistics.median(eager), 1000 * statistics.median(onnx)
    ratio = onnx_ms / eager_ms
    card = predictor.card
    print(
        f"model: {Path(args.checkpoint).parent.name} ({card.architecture}, tta {predictor.tta}, "
        f"{predictor.preprocess.input_size} px), batch {len(paths)} real images, {args.runs} runs, 2 threads"
    )
    print(
        f"export: {export_s:.1f} s; max |Δp| ONNX vs Predictor: {delta:.2e} (goal ≤ {PARITY_TOLERANCE:g}: "
        f"{'met' if delta <= PARITY_TOLERANCE else 'NOT met'})"
    )
    print(
        f"median latency per batch: eager PyTorch {eager_ms:.1f} ms, ONNX Runtime CPU {onnx_ms:.1f} ms"
    )
    print(
        f"ratio ONNX / eager: {ratio:.2f} (goal ≤ {GOAL_RATIO:.1f}: {'met' if ratio <= GOAL_RATIO else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
