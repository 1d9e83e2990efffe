"""Training throughput as the training loop runs it: images/s and the share spent waiting for data.

A GPU that waits for the DataLoader is wasted; this times ``Engine.train_epoch`` itself
(same loaders, collation, pinned memory, autocast, GradScaler and EMA as ``cxr train``) for a
fixed number of steps and reports how long the loop was blocked fetching the next batch.
A data-wait share above ~10% says: more workers (``num_workers``) or a smaller cache size;
near 0% with few images/s says: a larger batch (small batches are kernel-launch bound on a
large GPU). Runs on the CPU too, where the share shows whether augmentation keeps up.

    python benchmarks/bench_gpu_throughput.py                                   # configs/smoke.yaml
    python benchmarks/bench_gpu_throughput.py --config configs/pneumonia.yaml --steps 50 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from cxr_core.training.config import load_config
from cxr_core.training.engine import Engine
from cxr_core.utils.distributed import init_distributed, shutdown_distributed


class _TimedLoader:
    """The first ``steps`` batches of a DataLoader, with the time spent waiting for each."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps, self.wait = loader, steps, 0.0

    def __len__(self) -> int:
        return min(self.steps, len(self.loader))

    def __iter__(self):
        it = iter(self.loader)
        for _ in range(len(self)):
            start = time.perf_counter()
            batch = next(it)
            self.wait += time.perf_counter() - start
            yield batch


def measure(config_path: str, *, steps: int, warmup: int, overrides: dict) -> dict:
    """Images/s and data-wait share over ``steps`` training steps, after ``warmup`` untimed ones."""
    with tempfile.TemporaryDirectory() as out:
        config = load_config(config_path, overrides={**overrides, "out_dir": out, "ema": None})
        ctx = init_distributed(config.device)
        try:
            engine = Engine(config, ctx, progress=False)
            engine.setup()
            loader = engine.loader
            engine.loader = _TimedLoader(loader, warmup)
            engine.train_epoch(0)  # workers started, cuDNN autotuned, allocator warm
            timed = _TimedLoader(loader, steps)
            engine.loader = timed
            if ctx.device.type == "cuda":
                torch.cuda.synchronize(ctx.device)
            start = time.perf_counter()
            _, images = engine.train_epoch(
                1
            )  # train_epoch reads its loss once at the end: the GPU has finished
            seconds = time.perf_counter() - start
        finally:
            shutdown_distributed(ctx)
    return {
        "device": str(ctx.device)
        if ctx.device.type == "cpu"
        else torch.cuda.get_device_name(ctx.device),
        "amp": engine.runtime.amp,
        "architecture": config.model.name,
        "input_size": config.preprocess.input_size,
        "batch_size": engine.batch_size,
        "num_workers": engine.runtime.workers,
        "steps": len(timed),
        "images_per_s": round(images / seconds, 1),
        "data_wait_share": round(timed.wait / seconds, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None, help="auto, cpu, cuda (default: the config's)")
    parser.add_argument("--amp", default=None, help="auto, bf16, fp16, off (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", default=None, help="a number or auto (default: the config's)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    overrides: dict = {}
    for key, value in (
        ("device", args.device),
        ("amp", args.amp),
        ("optim.batch_size", args.batch_size),
    ):
        if value is not None:
            overrides[key] = value
    if args.workers is not None:
        overrides["num_workers"] = args.workers if args.workers == "auto" else int(args.workers)
    result = measure(args.config, steps=args.steps, warmup=args.warmup, overrides=overrides)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"throughput: {result['images_per_s']} images/s, data wait {100 * result['data_wait_share']:.1f}% "
            f"({result['architecture']} {result['input_size']} px on {result['device']}, amp {result['amp']}, "
            f"batch {result['batch_size']}, {result['num_workers']} workers, {result['steps']} steps)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
