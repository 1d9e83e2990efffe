"""Peak memory of load_image on a 60-megapixel RGBA PNG, just under the pixel limit.

Such a file is small on disk (a few hundred KB when the content compresses well) yet every
RGBA pixel decoded into float64 costs 32 bytes, so a loader that converts late can need
several GB for one upload. The image is decoded in a fresh subprocess, whose peak resident
set size (ru_maxrss) is compared with the 1 GB target; the RSS of the same subprocess after
imports only is printed too, so the part due to decoding is visible. The file is written by
another subprocess: a child forked from a parent that held the image would inherit its peak.

Usage: python benchmarks/bench_decode_memory.py [--side 7745] [--target-mb 1024]
(a PYTHONPATH naming another checkout measures that version of the loader)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import cxr_core
from cxr_core.data.imaging import load_image
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
img = load_image(sys.argv[1])
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kb": base, "peak_kb": peak, "seconds": seconds,
                  "shape": list(img.pixels.shape), "dtype": str(img.pixels.dtype), "loader": cxr_core.__file__}))
"""


def write_rgba_png(path: Path, side: int) -> None:
    """A side x side RGBA PNG: gray ramp rows with a varying alpha, compressible on disk."""
    ramp = (np.arange(side) % 256).astype(np.uint8)
    rgba = np.empty((side, side, 4), np.uint8)
    rgba[..., :3] = ramp[None, :, None]
    rgba[..., 3] = 255 - ramp[:, None]
    Image.fromarray(rgba).save(path, "PNG", compress_level=6)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--side", type=int, default=7745, help="width = height (7745^2 = 59,985,025 px)"
    )
    parser.add_argument("--target-mb", type=float, default=1024.0)
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)  # the writing subprocess
    args = parser.parse_args()
    if args.write_only:
        write_rgba_png(args.write_only, args.side)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rgba60mp.png"
        subprocess.run(
            [sys.executable, __file__, "--side", str(args.side), "--write-only", str(path)],
            check=True,
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)])),
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            cwd=tmp,
        )  # not the current folder: PYTHONPATH decides which cxr_core runs
        if done.returncode != 0:
            print(
                f"decode failed after {time.perf_counter() - started:.1f} s:\n{done.stderr.strip()}"
            )
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        size = path.stat().st_size
    peak_mb, base_mb = result["peak_kb"] / 1024, result["base_kb"] / 1024
    verdict = "met" if peak_mb < args.target_mb else "NOT met"
    print(f"loader: {result['loader']}")
    print(
        f"{args.side}x{args.side} RGBA PNG ({args.side**2:,} px, {size / 1024:,.0f} KB on disk) -> "
        f"{result['dtype']} {tuple(result['shape'])} in {result['seconds']:.1f} s"
    )
    print(
        f"peak RSS {peak_mb:,.0f} MB (after imports {base_mb:,.0f} MB); target < {args.target_mb:,.0f} MB: {verdict}"
    )
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    raise SystemExit(main())
