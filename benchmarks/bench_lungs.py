"""Lung-mask latency on CPU: a 256 px radiograph file -> mask, lung fraction and input check.

Goal: at most 100 ms per 256 px image for the whole :class:`LungSegmenter` call (decode,
preprocessing, network, resize back, speck removal, check), median over the runs, one image at
a time. The bare forward pass on a prepared tensor is timed round-robin in the same run, so the
overhead ratio is measured under the same machine load.

Both wall-clock and process CPU time are reported. On a machine whose cores are shared, wall
time mostly measures the wait for a core; with one thread, CPU time is what the image costs
one core, i.e. the latency on an otherwise idle core. The verdict uses CPU time with one
thread (``--threads 1``, the default here) and wall time otherwise.

    python benchmarks/bench_lungs.py                                  # bundled checkpoints/lungs
    python benchmarks/bench_lungs.py --checkpoint ckpt.safetensors --runs 30 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from cxr_core.data.imaging import load_image
from cxr_core.data.preprocessing import eval_tensor, to_cache_array
from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE_DIR = REPO.parent / "shared" / "data" / "lungmasks" / "montgomery" / "images"
GOAL_MS = 100.0


def timed(fn) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - start) * 1000.0, (time.process_time() - cpu) * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_LUNG_CHECKPOINT))
    parser.add_argument(
        "--image", help="a 256 px radiograph (default: first Montgomery image in ../shared/data)"
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
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
    segmenter = LungSegmenter.from_path(args.checkpoint, device="cpu")
    cfg = segmenter.preprocess
    pixels = load_image(image_path).pixels
    tensor = eval_tensor(to_cache_array(pixels, cfg.cache_size), cfg).unsqueeze(0)

    def bare() -> None:
        with torch.inference_mode():
            segmenter.model(tensor)

    def full() -> None:
        segmenter.segment(load_image(image_path).pixels)

    for _ in range(3):  # warm-up: first calls allocate and pick kernels
        bare()
        full()
    times: dict[str, list[tuple[float, float]]] = {"forward": [], "segment": []}
    for _ in range(args.runs):
        times["forward"].append(timed(bare))
        times["segment"].append(timed(full))
    wall = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in times.items()}
    threads = torch.get_num_threads()
    print(
        f"image {image_path.name} {pixels.shape[1]}x{pixels.shape[0]} px, network input {cfg.input_size} px, "
        f"{threads} thread(s), {args.runs} runs"
    )
    print(
        f"median forward pass        wall {wall['forward']:7.1f} ms   CPU {cpu['forward']:7.1f} ms"
    )
    print(
        f"median file -> mask+check  wall {wall['segment']:7.1f} ms   CPU {cpu['segment']:7.1f} ms  "
        f"(x{cpu['segment'] / cpu['forward']:.2f} of the forward pass in CPU time)"
    )
    judged, what = (
        (cpu["segment"], "CPU time, 1 thread") if threads == 1 else (wall["segment"], "wall time")
    )
    verdict = "met" if judged <= GOAL_MS else "NOT met"
    print(f"goal <= {GOAL_MS:.0f} ms per 256 px image ({what}): {judged:.1f} ms, {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
