"""Five-minute check of the GPU paths, for any machine with a GPU: one PASS/FAIL line per check.

    python benchmarks/gpu_smoke.py              # on a GPU machine; exit code 1 if anything failed
    python benchmarks/gpu_smoke.py --dry        # force the CPU rehearsal even where a GPU exists

The CUDA, AMP and NCCL code paths cannot run on the CPU-only machines where this project is
developed, so this is the first thing to run where a GPU exists. It trains a tiny config
(``configs/smoke.yaml``'s model and sizes on a synthetic two-class set written to a temporary
folder, so no dataset is needed) with amp fp16, bf16 and off; checks that a paused and
resumed run ends where an uninterrupted one does; launches ``torchrun`` with one GPU, with
two if present, and with an injected failure on rank 1 (the job must end within a minute,
printing the error); runs the Predictor and Grad-CAM on CUDA from two threads at once
against the CPU's answers; and prints a throughput line.

Without a GPU it runs a dry mode: GPU-only checks print SKIP with the reason, and those that
have a CPU stand-in (gloo instead of NCCL, the CPU instead of CUDA) are rehearsed on it, so
the script itself is known to work before it meets a GPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"
SIZE = 64
FAILURE_TIMEOUT_S = 60
results: list[tuple[str, str, str]] = []


def report(status: str, name: str, detail: str) -> None:
    results.append((status, name, detail))
    print(f"{status:<4} {name}: {detail}", flush=True)


def write_dataset(root: Path, per_class: int = 48) -> Path:
    """NORMAL (bright blob left) vs PNEUMONIA (blob right), two images per patient: learnable in an epoch."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for c, name in enumerate(("NORMAL", "PNEUMONIA")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cx = rng.integers(10, 24) if c == 0 else rng.integers(40, 54)
            blob = np.exp(-((yy - rng.integers(16, 48)) ** 2 + (xx - cx) ** 2) / 40.0)
            pixels = np.clip(0.3 + 0.6 * blob + rng.normal(0, 0.05, blob.shape), 0, 1) * 255
            Image.fromarray(pixels.astype(np.uint8), mode="L").save(
                root / name / f"person{c * 1000 + i // 2}_{i % 2}.png"
            )
    return root


class Workspace:
    """The synthetic data, a shared cache and a fresh output folder per run."""

    def __init__(self, root: Path, device: str) -> None:
        self.root, self.device = root, device
        self.data = write_dataset(root / "data")
        self.runs = 0

    def config(self, **overrides):
        from cxr_core.training.config import load_config

        self.runs += 1
        settings = {
            "data.path": str(self.data),
            "data.val": 0.25,
            "data.cache_dir": str(self.root / "cache"),
            "out_dir": str(self.root / f"run{self.runs}"),
            "epochs": 2,
            "optim.batch_size": 16,
            "eval.n_boot": 0,
            "early_stopping.patience": None,
            "device": self.device,
            "model.dropout": 0.2,
            **overrides,
        }
        return load_config(SMOKE, overrides=settings)

    def config_file(self, config) -> Path:
        path = Path(config.out_dir + ".yaml")
        path.write_text(yaml.safe_dump(config.to_dict()))
        return path


def check_training(ws: Workspace, amp: str, gpu: bool) -> None:
    from cxr_core.models.checkpoint import load_checkpoint
    from cxr_core.training import train

    name = f"train amp {amp}"
    if amp == "fp16" and not gpu:
        report("SKIP", name, "no CUDA GPU (fp16 autocast and the GradScaler need one)")
        return
    started = time.perf_counter()
    config = ws.config(amp=amp)
    result = train(config, progress=False)
    card = load_checkpoint(result.best_checkpoint).card.training
    expected = {"fp16": "float16", "bf16": "bfloat16", "off": "off"}[amp]
    ok = result.completed and card["amp"] == expected and np.isfinite(result.best_metric)
    report(
        "PASS" if ok else "FAIL",
        name,
        f"ran as {card['amp']} on {card['device']}, best {result.monitor} "
        f"{result.best_metric:.3f}, {time.perf_counter() - started:.1f}s",
    )


def check_resume(ws: Workspace, gpu: bool) -> None:
    from cxr_core.training import train

    straight, chunked = (
        ws.config(ema={"decay": 0.9}),
        ws.config(ema={"decay": 0.9}),
    )  # two output folders
    train(straight, progress=False)
    train(chunked, progress=False, stop_after_epochs=1)
    train(chunked, resume=True, progress=False)
    a = load_file(str(Path(straight.out_dir) / "last.safetensors"))
    b = load_file(str(Path(chunked.out_dir) / "last.safetensors"))
    diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
    if gpu:  # cudnn.benchmark picks the fastest kernels, not bit-identical ones
        ok, rule = diff < 1e-3, "< 1e-3 (cuDNN autotuning: rounding only)"
    else:
        ok, rule = diff == 0.0, "== 0 (bit-identical on the CPU)"
    report(
        "PASS" if ok else "FAIL",
        "resume equals uninterrupted run",
        f"max weight difference {diff:.2e} {rule}",
    )


def torchrun(config_file: Path, nproc: int, *, fail_rank: int | None = None, timeout: float = 240):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(Path(__file__).resolve()),
        "--worker",
        str(config_file),
    ]
    if fail_rank is not None:
        cmd += ["--fail-rank", str(fail_rank)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.perf_counter()
    with subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every worker it started
            out, err = proc.communicate()
            return None, out + err, time.perf_counter() - started
    return proc.returncode, out + err, time.perf_counter() - started


def check_torchrun(ws: Workspace, nproc: int, label: str) -> None:
    from cxr_core.models.checkpoint import load_checkpoint

    config = ws.config(epochs=1)
    code, output, seconds = torchrun(ws.config_file(config), nproc)
    if code != 0:
        report("FAIL", label, f"exit {code} after {seconds:.0f}s: {output.strip()[-400:]}")
        return
    card = load_checkpoint(Path(config.out_dir) / "model.safetensors").card.training
    ok = card["world_size"] == max(nproc, 1)
    report(
        "PASS" if ok else "FAIL",
        label,
        f"world size {card['world_size']}, global batch {card['global_batch_size']}, "
        f"{card['device']}, {seconds:.0f}s",
    )


def check_failure(ws: Workspace, label: str, device: str | None = None) -> None:
    config = ws.config(epochs=1, device=device or ws.device)
    code, output, seconds = torchrun(
        ws.config_file(config), 2, fail_rank=1, timeout=FAILURE_TIMEOUT_S
    )
    printed = "injected failure on rank 1" in output
    ok = code not in (0, None) and printed
    state = "still running, killed" if code is None else f"exit {code}"
    report(
        "PASS" if ok else "FAIL",
        label,
        f"{state} after {seconds:.0f}s (limit {FAILURE_TIMEOUT_S}s), error {'printed' if printed else 'NOT printed'}",
    )


def check_predictor_threads(ws: Workspace, device: str) -> None:
    from cxr_core.inference.explain import explain_batch
    from cxr_core.inference.predictor import Predictor
    from cxr_core.training import train

    config = ws.config(epochs=1, device="cpu")
    checkpoint = train(config, progress=False).best_checkpoint
    images = [np.asarray(Image.open(p)) for p in sorted(ws.data.rglob("*.png"))[:4]]
    classes = ["Normal", "Pneumonia", "Pneumonia", "Normal"]
    reference = Predictor.from_checkpoint(checkpoint, device="cpu").predict_probabilities(images)
    predictor = Predictor.from_checkpoint(checkpoint, device=device)
    outputs: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for _ in range(3):
                outputs[k] = (
                    predictor.predict_probabilities(images),
                    explain_batch(predictor, images, classes),
                )
        except BaseException as exc:  # noqa: BLE001 - reported as the check's failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        report("FAIL", f"Predictor + Grad-CAM, 2 threads on {device}", repr(errors[0]))
        return
    gap = max(float(np.abs(outputs[k][0] - reference).max()) for k in outputs)
    maps_ok = all(
        len(outputs[k][1]) == 4 and all(np.isfinite(m).all() for m in outputs[k][1])
        for k in outputs
    )
    agree = np.array_equal(outputs[0][0], outputs[1][0])
    ok = gap < 1e-3 and maps_ok and agree
    report(
        "PASS" if ok else "FAIL",
        f"Predictor + Grad-CAM, 2 threads on {device}",
        f"probabilities within {gap:.1e} of the CPU's, threads {'agree' if agree else 'DISAGREE'}, "
        f"heatmaps {'finite' if maps_ok else 'BROKEN'}",
    )


def check_throughput(ws: Workspace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gpu_throughput import measure

    config = ws.config(epochs=1)
    r = measure(str(ws.config_file(config)), steps=10, warmup=2, overrides={"optim.batch_size": 8})
    report(
        "PASS",
        "throughput",
        f"{r['images_per_s']} images/s, data wait {100 * r['data_wait_share']:.1f}% "
        f"({r['architecture']} {r['input_size']} px, batch {r['batch_size']}, amp {r['amp']}, {r['device']}; "
        "tiny model: a floor, not a benchmark)",
    )


def run_checks(dry: bool) -> int:
    gpu = torch.cuda.is_available() and not dry
    gpus = torch.cuda.device_count() if gpu else 0
    if gpu:
        names = ", ".join(
            f"{torch.cuda.get_device_name(i)} (cc {'.'.join(map(str, torch.cuda.get_device_capability(i)))})"
            for i in range(gpus)
        )
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} GPU(s): {names}")
    else:
        print(
            f"torch {torch.__version__}: DRY MODE, {'forced by --dry' if dry else 'no CUDA GPU'}; GPU-only checks "
            "are skipped, and those with a CPU stand-in are rehearsed on it"
        )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cxr_gpu_smoke_") as tmp:
        ws = Workspace(Path(tmp), "cuda" if gpu else "cpu")
        checks: list[tuple[str, Callable[[], None]]] = [
            *(
                (f"train amp {amp}", lambda amp=amp: check_training(ws, amp, gpu))
                for amp in ("fp16", "bf16", "off")
            ),
            ("resume", lambda: check_resume(ws, gpu)),
        ]
        if gpu:
            checks.append(("torchrun, 1 GPU", lambda: check_torchrun(ws, 1, "torchrun, 1 GPU")))
            if gpus >= 2:
                checks += [
                    ("torchrun, 2 GPUs", lambda: check_torchrun(ws, 2, "torchrun, 2 GPUs (NCCL)")),
                    (
                        "torchrun failure",
                        lambda: check_failure(ws, "torchrun, 2 GPUs, rank 1 fails"),
                    ),
                ]
            else:
                report(
                    "SKIP",
                    "torchrun, 2 GPUs",
                    "one GPU only (NCCL refuses two ranks on one GPU); "
                    "the failing rank is rehearsed with 2 CPU processes (gloo)",
                )
                checks.append(
                    (
                        "torchrun failure",
                        lambda: check_failure(
                            ws,
                            "torchrun, 2 CPU processes, rank 1 fails (gloo stand-in)",
                            device="cpu",
                        ),
                    )
                )
            checks.append(("Predictor + Grad-CAM", lambda: check_predictor_threads(ws, "cuda")))
        else:
            report(
                "SKIP",
                "fp16, torchrun on GPUs (NCCL), Predictor + Grad-CAM on CUDA",
                "no CUDA GPU; torchrun rehearsed with 2 CPU processes (gloo), the Predictor on the CPU",
            )
            checks += [
                (
                    "torchrun",
                    lambda: check_torchrun(ws, 2, "torchrun, 2 CPU processes (gloo stand-in)"),
                ),
                (
                    "torchrun failure",
                    lambda: check_failure(
                        ws, "torchrun, 2 CPU processes, rank 1 fails (gloo stand-in)"
                    ),
                ),
                ("Predictor + Grad-CAM", lambda: check_predictor_threads(ws, "cpu")),
            ]
        checks.append(("throughput", lambda: check_throughput(ws)))
        for name, check in checks:
            try:
                check()
            except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
                report("FAIL", name, f"{type(exc).__name__}: {exc}")
    counts = {status: sum(r[0] == status for r in results) for status in ("PASS", "SKIP", "FAIL")}
    print(
        f"{'FAIL' if counts['FAIL'] else 'PASS'} smoke: {counts['PASS']} passed, {counts['SKIP']} skipped, "
        f"{counts['FAIL']} failed in {time.perf_counter() - started:.0f}s{' (dry mode)' if not gpu else ''}"
    )
    return 1 if counts["FAIL"] else 0


def worker(config_file: str, fail_rank: int | None) -> int:
    """What torchrun starts: ``cxr train``, with rank ``fail_rank`` raising in its first epoch."""
    from cxr_core.cli.main import main
    from cxr_core.errors import CXRError
    from cxr_core.training.engine import Engine

    if fail_rank is not None:
        original = Engine.train_epoch

        def train_epoch(self, epoch):
            if self.ctx.rank == fail_rank:
                raise CXRError(f"injected failure on rank {fail_rank}")
            return original(self, epoch)

        Engine.train_epoch = train_epoch
    return main(["train", "--config", config_file, "--no-progress"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry", action="store_true", help="rehearse on the CPU even where a GPU exists"
    )
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--fail-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.fail_rank)
    return run_checks(args.dry)


if __name__ == "__main__":
    sys.exit(main())
