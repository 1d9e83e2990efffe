"""CPU training step: contiguous float32 vs channels-last float32 (the default) vs channels-last bf16.

Goal: channels-last (``channels_last: true``, how the training loop lays out activations)
makes a CPU training step at least 1.2x faster than contiguous NCHW float32, which is what
lets the nih14 ensemble recipe fit its CPU time budget. ``amp: bf16`` is timed too: on the
2-core AMX machine the recipes were trained on it was no faster than channels-last float32,
and it changes the numerics.
A step is forward + BCE loss + backward + AdamW update on a random batch, autocast exactly
as the training loop resolves it; the modes alternate step by step so machine load affects
them alike, and medians are reported.

    python benchmarks/bench_training_step.py                                  # EfficientNet-Lite0, 192 px
    python benchmarks/bench_training_step.py --arch efficientnet_lite2 --size 256 --steps 6
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from cxr_core.data.labels import NIH14
from cxr_core.models import create_model
from cxr_core.training.amp import resolve_amp

MODES = {  # name: (channels_last, amp)
    "float32 contiguous": (False, "off"),
    "float32 channels-last": (True, "off"),
    "bf16 channels-last": (True, "bf16"),
}


def native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here; elsewhere autocast emulates it and is slower."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def make_step(arch: str, size: int, batch: int, channels_last: bool, amp: str):
    torch.manual_seed(0)
    model = create_model(arch, NIH14.num_classes).train()
    images = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
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

    steps = {
        name: make_step(args.arch, args.size, args.batch, *mode) for name, mode in MODES.items()
    }
    for step in steps.values():  # warm-up: oneDNN primitive creation, allocator
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(step())

    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["float32 contiguous"]
    print(
        f"{args.arch} at {args.size}px, batch {args.batch}, {args.steps} steps each, torch threads "
        f"{torch.get_num_threads()}, native bf16: {native_bf16()}"
    )
    print(f"{'mode':<24}{'median s/step':>15}{'images/s':>10}{'speed-up':>10}")
    for name, value in medians.items():
        print(f"{name:<24}{value:>15.3f}{args.batch / value:>10.1f}{base / value:>9.2f}x")
    ratio = base / medians["float32 channels-last"]
    print(
        f"goal channels-last >= 1.20x faster than contiguous: {'met' if ratio >= 1.2 else 'NOT met'} ({ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
