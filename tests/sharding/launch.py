"""Running ``cxr`` as other processes: under ``torchrun`` with N CPU processes (Gloo), or alone,
and killing a run at a point of its progress."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DRIVER = Path(__file__).with_name("driver.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def torchrun_command(args: Sequence[str], nproc: int = 2, fault: str | None = None) -> list[str]:
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
    ]
    if fault is None:
        return [*launcher, "-m", "cxr_core", *args]
    return [*launcher, str(DRIVER), fault, *args]


def single_command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "cxr_core", *args]


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Run to the end; the whole process group is killed if it outlives ``timeout``."""
    with subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 600) -> bool:
    """Start ``cmd`` and SIGKILL its whole process group as soon as ``ready()`` holds (polled);
    returns False when the run ended by itself first."""
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None:
            if ready():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd} neither finished nor reached the kill point")
            time.sleep(0.01)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
