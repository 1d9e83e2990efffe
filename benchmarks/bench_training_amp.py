"""CPU training step: float32 vs bfloat16 autocast (``amp: bf16``), the choice the bundled recipes make.

Goal: on a CPU with native bfloat16 (AMX or AVX512-BF16), ``amp: bf16`` makes a training step
at least 1.3x faster than float32, which is what lets the nih14 ensemble recipe fit its
CPU time budget. The step is forward + BCE loss + backward + AdamW update on a random batch,
autocast exactly as the training loop resolves it; the two modes alternate step by step so
machine load affects them alike, and medians are reported.

    python benchmarks/bench_training_amp.py                                  # EfficientNet-Lite0, 192 px
    python benchmarks/bench_training_amp.py --arch efficientnet_lite2 --size 256 --steps 6
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from cxr_core.labels import NIH14
from cxr_core.models import create_model
from cxr_core.training.loop import resolve_amp


def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here; elsewhere autocast emulates it and is slower."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def make_step(arch: str, size: int, batch: int, amp: str):
    torch.manual_seed(0)
    model = create_model(arch, NIH14.num_classes).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, size, size)
    targets = (torch.rand(batch, NIH14.num_classes) > 0.8).float()
    dtype = resolve_amp(amp, torch.device("cpu"))

    def step() -> float:
        start = time.perf_counter()
        autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            logits = model(images)
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return time.perf_counter() - start

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)

    steps = {amp: make_step(args.arch, args.size, args.batch, amp) for amp in ("off", "bf16")}
    for step in steps.values():  # warm-up: oneDNN primitive creation, allocator
        step()
    times: dict[str, list[float]] = {amp: [] for amp in steps}
    for _ in range(args.steps):
        for amp, step in steps.items():
            times[amp].append(step())

    medians = {amp: statistics.median(values) for amp, values in times.items()}
    print(f"{args.arch} at {args.size}px, batch {args.batch}, {args.steps} steps each, torch threads "
          f"{torch.get_num_threads()}, native bf16: {native_bf16()}")
    print(f"{'amp':<8}{'median s/step':>15}{'images/s':>10}{'speed-up':>10}")
    for amp, value in medians.items():
        print(f"{amp:<8}{value:>15.3f}{args.batch / value:>10.1f}{medians['off'] / value:>9.2f}x")
    ratio = medians["off"] / medians["bf16"]
    if native_bf16():
        print(f"goal bf16 >= 1.30x faster than float32: {'met' if ratio >= 1.3 else 'NOT met'} ({ratio:.2f}x)")
    else:
        print(f"this CPU has no native bfloat16; keep amp: off here ({ratio:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
