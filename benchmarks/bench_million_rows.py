"""Million-row archives: time and peak memory of inspect, splitting, predict and evaluate at
10k / 100k / 1M rows, and how they grow.

Each size gets a generated NIH-style archive (``benchmarks/synthetic_archive.py``: one label
file, a few thousand distinct 64 px films linked under one name per row) and each command
runs as its own process, as a user would run it:

  inspect   cxr data inspect ROOT                 (reads the labels, checks every file, splits)
  split     assign_splits + leakage check on the labels alone (the patient-level split)
  predict   cxr predict ROOT/images ...           (every film, one prediction table)
  evaluate  cxr evaluate ... --split test          (every row: predict, then score with
                                                    1000 patient-level bootstrap resamples)
  bootstrap bootstrap_cis on the evaluation's labels and scores alone (14 findings, all
            statistics, 1000 resamples), the part of evaluate that once grew fastest
  bootstrap-labels  the same on the archive's label file with random scores (no evaluate
            run needed: the 1M-row figure without scoring a million films first)

Printed per command and size: wall time, CPU time (the process and its children; on a shared
machine the steadier measure), peak RSS of the command's own process (the kernel's VmHWM) and
of its whole process tree, and the growth of CPU time
per 10x rows (1 = linear... printed as the ratio of times, ~10 when linear). Goals: every
process under 2 GB at 1M rows ("met"/"NOT met"), CPU time growing at most 13x per 10x rows,
and the 1M-row bootstrap under 10 minutes.

The model is a small_cnn at 16 px with random weights, so that the numbers measure the
pipeline (listing, decoding, tables, statistics) rather than a network; processes run with
OMP_NUM_THREADS=1 (on a busy 2-core machine two intra-op threads spin and cost ~10x CPU).

Usage: python benchmarks/bench_million_rows.py [--sizes 10000 100000 1000000]
       [--commands inspect split predict evaluate bootstrap bootstrap-labels] [--root /tmp/cxr-million] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_archive import make_archive, root_with_test_list  # noqa: E402

LIMIT_MB = 2048
GROWTH_LIMIT = 13.0
BOOTSTRAP_LIMIT_S = 600.0
SPLIT_SCRIPT = """
import sys
from cxr_core.data.formats import load_dataset
from cxr_core.data.splits import assign_splits, leakage_report
manifest = assign_splits(load_dataset(sys.argv[1], "nih", check_files=False), val=0.15, test=0.1)
assert leakage_report(manifest)["ok"]
"""
BOOTSTRAP_SCRIPT = """
import sys, time
from cxr_core.artifacts.prediction_table import read_prediction_table
from cxr_core.metrics import bootstrap_cis
from cxr_core.metrics.bootstrap import STATISTICS
table = read_prediction_table(sys.argv[1])
frame, classes = table.frame, table.classes
labels = frame[["label:" + c for c in classes]].to_numpy()
probs = frame[["prob:" + c for c in classes]].to_numpy()
started = time.perf_counter()
bootstrap_cis(labels, probs, STATISTICS, thresholds=0.5, groups=frame["patient_id"], n_boot=1000)
print(f"bootstrap {len(frame)} rows: {time.perf_counter() - started:.1f} s")
"""

BOOTSTRAP_LABELS_SCRIPT = """
import sys, time
import numpy as np, pandas as pd
from cxr_core.metrics import bootstrap_cis
from cxr_core.metrics.bootstrap import STATISTICS
frame = pd.read_csv(sys.argv[1], usecols=["Finding Labels", "Patient ID"])
findings = frame["Finding Labels"].str.split("|")
names = sorted(set(findings.explode()) - {"No Finding"})
labels = np.stack([findings.map(lambda f, c=c: c in f).to_numpy() for c in names], 1).astype(np.int8)
probs = np.random.default_rng(0).random(labels.shape, dtype=np.float32) * 0.5 + labels * 0.3
started = time.perf_counter()
bootstrap_cis(labels, probs, STATISTICS, thresholds=0.5, groups=frame["Patient ID"], n_boot=1000)
print(f"bootstrap {len(frame)} rows: {time.perf_counter() - started:.1f} s")
"""


def checkpoint(root: Path) -> Path:
    """small_cnn, 14 NIH findings, 16 px, random weights."""
    import torch

    from cxr_core.data.labels import NIH14
    from cxr_core.data.preprocessing import PreprocessConfig
    from cxr_core.models import create_model
    from cxr_core.models.card import ModelCard
    from cxr_core.models.checkpoint import save_checkpoint

    path = root / "tiny16.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        preprocess = PreprocessConfig(cache_size=16, input_size=16, in_chans=1)
        card = ModelCard(
            architecture="small_cnn",
            num_classes=14,
            label_space=NIH14.to_dict(),
            preprocess=preprocess.to_dict(),
            in_chans=1,
            thresholds=dict.fromkeys(NIH14.classes, 0.5),
        )
        model = create_model("small_cnn", 14, in_chans=1)
        save_checkpoint(path, model.state_dict(), card)
    return path


def _tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (MB), read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/status") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def _high_water_mb(pid: int) -> float:
    """The kernel's peak RSS of one process since it started its program (VmHWM, MB)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return 0.0


def measure(cmd: list[str]) -> dict:
    """Wall and CPU seconds, peak RSS of the command's process (its VmHWM, read every 0.2 s: wait4's
    maxrss would count this benchmark's own memory, which the child carries until it runs its
    program) and of the whole tree (sampled)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    tree_peak, own_peak = [0.0], [0.0]
    ended = threading.Event()

    def sample() -> None:  # never poll(): it could reap the child before wait4 reads its usage
        while not ended.is_set():
            own_peak[0] = max(own_peak[0], _high_water_mb(proc.pid))
            tree_peak[0] = max(tree_peak[0], _tree_rss_mb(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    ended.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return {
        "wall": time.perf_counter() - started,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss": own_peak[0],
        "tree": tree_peak[0],
        "output": output,
    }


def commands(root: Path, out: Path, ckpt: Path) -> dict[str, list[str]]:
    cxr = [sys.executable, "-m", "cxr_core"]
    return {
        "inspect": [*cxr, "data", "inspect", str(root)],
        "split": [sys.executable, "-c", SPLIT_SCRIPT, str(root)],
        "predict": [*cxr, "predict", str(root / "images"), "--checkpoint", str(ckpt)]
        + ["--out", str(out / "predict"), "--batch-size", "256", "--device", "cpu"],
        "evaluate": [
            *cxr,
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(root_with_test_list(root)),
        ]
        + ["--split", "test", "--out", str(out / "evaluate"), "--cache-dir", str(out / "cache")]
        + ["--batch-size", "256", "--no-progress", "--device", "cpu"],
        "bootstrap": [
            sys.executable,
            "-c",
            BOOTSTRAP_SCRIPT,
            str(out / "evaluate" / "predictions.csv"),
        ],
        "bootstrap-labels": [
            sys.executable,
            "-c",
            BOOTSTRAP_LABELS_SCRIPT,
            str(root / "Data_Entry_2017.csv"),
        ],
    }


def report(results: dict[tuple[str, int], dict], sizes: list[int], names: list[str]) -> None:
    print(
        f"\n{'command':<10} {'rows':>9} {'wall s':>9} {'CPU s':>9} {'peak MB':>8} {'tree MB':>8} {'CPU x':>6}"
    )
    for name in names:
        previous = None
        for n in sizes:
            r = results.get((name, n))
            if r is None:
                continue
            growth = f"{r['cpu'] / previous:6.1f}" if previous else "     -"
            print(
                f"{name:<10} {n:>9} {r['wall']:>9.1f} {r['cpu']:>9.1f} {r['rss']:>8.0f} "
                f"{r['tree']:>8.0f} {growth}"
            )
            previous = r["cpu"]
    peak = max(r["rss"] for r in results.values())
    print(
        f"\nlargest process: {peak:.0f} MB (goal < {LIMIT_MB} MB): {'met' if peak < LIMIT_MB else 'NOT met'}"
    )
    growths = [
        results[(name, b)]["cpu"] / results[(name, a)]["cpu"]
        for name in names
        for a, b in zip(sizes, sizes[1:])
        if (name, a) in results and (name, b) in results and b == 10 * a
    ]
    if growths:
        worst = max(growths)
        print(
            f"worst CPU growth per 10x rows: {worst:.1f}x (goal <= {GROWTH_LIMIT:g}x): "
            f"{'met' if worst <= GROWTH_LIMIT else 'NOT met'}"
        )
    boot = results.get(("bootstrap", max(sizes))) or results.get(("bootstrap-labels", max(sizes)))
    if boot is not None:
        seconds = float(boot["output"].rsplit(":", 1)[1].split()[0])
        print(
            f"bootstrap at {max(sizes)} rows: {seconds:.0f} s (goal < {BOOTSTRAP_LIMIT_S:.0f} s): "
            f"{'met' if seconds < BOOTSTRAP_LIMIT_S else 'NOT met'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--commands", nargs="+", default=["inspect", "split", "predict", "evaluate", "bootstrap"]
    )
    parser.add_argument("--root", type=Path, default=Path("/tmp/cxr-million"))
    parser.add_argument("--keep", action="store_true", help="keep the archives and outputs")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint(args.root)
    results: dict[tuple[str, int], dict] = {}
    for n in args.sizes:
        started = time.perf_counter()
        archive = make_archive(args.root / f"archive-{n}", n)
        print(f"archive of {n} rows ready ({time.perf_counter() - started:.0f} s)", flush=True)
        out = args.root / f"out-{n}"
        shutil.rmtree(out, ignore_errors=True)
        steps = commands(archive, out, ckpt)
        for name in args.commands:
            results[(name, n)] = r = measure(steps[name])
            print(
                f"  {name:<9} {n:>9} rows: {r['wall']:.0f} s wall, {r['cpu']:.0f} s CPU, {r['rss']:.0f} MB",
                flush=True,
            )
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(archive, ignore_errors=True)
    report(results, args.sizes, args.commands)


if __name__ == "__main__":
    main()
