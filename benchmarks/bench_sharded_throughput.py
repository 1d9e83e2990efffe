"""``cxr predict`` throughput: 1 process vs 2 under torchrun, and where an image's time goes.

Part 1, end to end: the same folder of real radiographs is predicted by

  1 process   cxr predict (torch's default intra-op threads, decoding threads as usual)
  1 process   the same with OMP_NUM_THREADS=1 (what each torchrun process gets)
  2 processes torchrun --nproc-per-node 2 -m cxr_core predict (Gloo, one thread each)

alternated ``--repeats`` times (machine load hits all alike); the median images/s is printed
with the speedup of 2 processes over 1 and the scaling efficiency (speedup / 2). The rate is
the films over the time the processes spent predicting, which each logs (``rank R/N: K files
in S s``; the slowest rank for 2); the rest of a launch's wall time (loading torch and the
model, listing the files, merging the table) is printed as its fixed cost.

Part 2, the per-image cost split, measured in this process on one thread over the same films:
decode (read and check the file: ``load_image``), preprocess (quality check, resizing to the
cache size, the input gate's header checks and the network tensor), forward (the model, per
image of a batch) and write (the prediction-table row and its CSV text). Their sum against the
measured 1-thread rate shows what the pipeline adds (threads, queues); 2 processes against
twice that rate shows the scaling loss (two processes on two cores also share them with
their decoding threads and whatever else runs).

Usage: python benchmarks/bench_sharded_throughput.py [--images 256] [--repeats 2]
       [--checkpoint checkpoints/pneumonia/model.safetensors] [--source ../shared/data/nih14/images]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EFFICIENCY_GOAL = 0.8  # 2 processes at least 1.6x one single-threaded process


def _folder(source: Path, dest: Path, count: int) -> Path:
    films = sorted(source.glob("*.png"))[:count]
    if len(films) < count:
        raise SystemExit(f"{source} holds {len(films)} PNG films, {count} asked for")
    dest.mkdir(parents=True, exist_ok=True)
    for film in films:
        (dest / film.name).symlink_to(film)
    return dest


def _predict_cmd(
    mode: str, folder: Path, out: Path, ckpt: Path, batch: int
) -> tuple[list[str], dict]:
    args = ["predict", str(folder), "--checkpoint", str(ckpt), "--out", str(out)]
    args += ["--batch-size", str(batch), "--device", "cpu"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    if mode == "2 processes":
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
        ]
        return [*launcher, "-m", "cxr_core", *args], env
    if mode == "1 process, 1 thread":
        env["OMP_NUM_THREADS"] = "1"
    else:
        env.pop("OMP_NUM_THREADS", None)
    return [sys.executable, "-m", "cxr_core", *args], env


def _launch(cmd: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, seconds the ranks spent predicting (the slowest), films predicted), from
    the ``rank R/N: K files in S s`` line each process logs."""
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    found = re.findall(r"rank \d+/\d+: (\d+) files in ([\d.]+) s", done.stdout + done.stderr)
    return wall, max(float(s) for _, s in found), sum(int(k) for k, _ in found)


def end_to_end(folder: Path, ckpt: Path, batch: int, repeats: int, tmp: Path) -> dict:
    modes = ("1 process", "1 process, 1 thread", "2 processes")
    runs: dict[str, list[tuple[float, float, int]]] = {m: [] for m in modes}
    for r in range(repeats):
        for mode in modes:
            runs[mode].append(
                _launch(*_predict_cmd(mode, folder, tmp / f"out-{r}-{mode}", ckpt, batch))
            )
    out = {}
    for mode, launches in runs.items():
        wall = statistics.median(w for w, _, _ in launches)
        busy = statistics.median(b for _, b, _ in launches)
        out[mode] = {"rate": launches[0][2] / busy, "fixed": wall - busy, "total": wall}
    return out


def stage_costs(folder: Path, ckpt: Path, batch: int) -> dict[str, float]:
    """Milliseconds per image of each stage, on one thread, in this process."""
    from cxr_core.artifacts.prediction_table import write_prediction_table
    from cxr_core.data.imaging import load_image
    from cxr_core.inference.predictor import FileResult, Predictor
    from cxr_core.inference.table_rows import file_row

    torch.set_num_threads(1)
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    paths = sorted(str(p) for p in folder.iterdir())
    ms: dict[str, float] = {}
    started = time.perf_counter()
    images = [load_image(p) for p in paths]
    ms["decode"] = (time.perf_counter() - started) / len(paths) * 1000
    started = time.perf_counter()
    arrays = []
    for image in images:
        arrays.append(predictor.cache_array(image))
        predictor.gate.header_warnings(image.meta)
    tensors = [
        predictor.tensor_from_cache_arrays(arrays[i : i + batch])
        for i in range(0, len(arrays), batch)
    ]
    ms["preprocess"] = (time.perf_counter() - started) / len(paths) * 1000
    started = time.perf_counter()
    probs = [predictor._score(t)[0] for t in tensors]  # (probabilities, chest, domain scores)
    ms["forward"] = (time.perf_counter() - started) / len(paths) * 1000
    predictions = predictor.to_predictions(np.concatenate(probs), paths, predictor.thresholds)
    started = time.perf_counter()
    rows = [
        file_row(FileResult(p, prediction=pred), multilabel=predictor.label_space.multilabel)
        for p, pred in zip(paths, predictions)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        write_prediction_table(
            Path(tmp) / "t.csv", predictor.classes, rows, labels=False, thresholds=True, extra=()
        )
    ms["write"] = (time.perf_counter() - started) / len(paths) * 1000
    return ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--checkpoint", type=Path, default=REPO / "checkpoints" / "pneumonia" / "model.safetensors"
    )
    parser.add_argument(
        "--source", type=Path, default=REPO.parent / "shared" / "data" / "nih14" / "images"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        large = _folder(args.source, tmp / "films", args.images)
        print(
            f"{args.images} films from {args.source}, model {args.checkpoint}, batch {args.batch_size}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        runs = end_to_end(large, args.checkpoint, args.batch_size, args.repeats, tmp)
        ms = stage_costs(large, args.checkpoint, args.batch_size)
    print(f"\n{'launch':<22} {'images/s':>9} {'fixed s':>8} {'total s':>8}")
    for mode, r in runs.items():
        print(f"{mode:<22} {r['rate']:>9.2f} {r['fixed']:>8.1f} {r['total']:>8.1f}")
    one, one_thread, two = (runs[m]["rate"] for m in runs)
    print(f"\n2 processes vs 1 process:           {two / one:.2f}x")
    print(
        f"2 processes vs 1 process, 1 thread: {two / one_thread:.2f}x (scaling efficiency {two / one_thread / 2:.0%})"
    )
    total = sum(ms.values())
    print(
        f"\nper-image cost on one thread ({total:.1f} ms = {1000 / total:.1f} images/s if nothing overlapped):"
    )
    for stage, value in ms.items():
        print(f"  {stage:<11} {value:7.2f} ms  {value / total:5.0%}")
    print(
        f"measured 1 process, 1 thread: {1000 / one_thread:.1f} ms per image "
        f"({'overlap of decoding threads and the model' if 1000 / one_thread < total else 'pipeline overhead'}: "
        f"{abs(total - 1000 / one_thread):.1f} ms)"
    )
    efficiency = two / one_thread / 2
    print(
        f"scaling loss of 2 processes: {max(0.0, 1 - efficiency):.0%} of the ideal 2x; goal: efficiency "
        f">= {EFFICIENCY_GOAL:.0%}: {'met' if efficiency >= EFFICIENCY_GOAL else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
