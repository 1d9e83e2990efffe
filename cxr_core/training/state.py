"""The resumable training state (``train_state.pt``) and the random-number-generator snapshots.

The file is read back with ``torch.load(weights_only=True)``, which only accepts tensors and
plain containers of numbers and strings, so loading it can never execute code. NumPy's and
Python's RNG states are therefore converted to tensors and lists on the way out and back on
the way in. The model weights are stored here too (not only in ``last.safetensors``) so the
state is self-consistent: it is written atomically once per epoch, after everything else.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_core.artifacts.run_dir import STATE_FILE
from cxr_core.errors import CheckpointError
from cxr_core.utils.atomic import write_atomically

STATE_VERSION = 1


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """Every generator this process draws from, in weights_only-safe form, all on the CPU.

    ``device`` is the process's GPU: its CUDA generator (the one dropout uses) is captured,
    not every visible GPU's, because under ``torchrun`` each rank owns one device and saves
    its own state.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    cuda = device is not None and device.type == "cuda"
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(py_version),
            "internal": list(py_internal),
            "gauss_next": py_gauss,
        },
        "cuda": torch.cuda.get_rng_state(device).cpu() if cuda else None,
    }


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Put back a :func:`capture_rng` snapshot; the CUDA part goes to ``device``.

    The generators only accept CPU byte tensors, so whatever device the snapshot was loaded
    onto, it is brought to the CPU first (``torch.set_rng_state`` refuses anything else).
    """
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].cpu().numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    cuda = state.get("cuda")
    if isinstance(
        cuda, (list, tuple)
    ):  # states written before per-rank capture held every visible GPU's
        cuda = cuda[0] if cuda else None
    if cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda.cpu(), device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_train_state(out_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write the state atomically; ``state`` must hold only tensors and plain containers."""
    payload = {"version": STATE_VERSION, **state}
    return write_atomically(Path(out_dir) / STATE_FILE, lambda tmp: torch.save(payload, tmp))


def load_train_state(out_dir: str | Path) -> dict[str, Any]:
    """The saved state with every tensor on the CPU.

    The caller moves each part where it belongs: ``load_state_dict`` copies weights onto the
    model's device, optimizers keep Adam's ``step`` counters on the CPU as PyTorch intends
    (on the GPU each would cost a host sync per step), and RNG states must stay CPU tensors.
    """
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(
            f"cannot resume: {path} does not exist. Start without --resume, or point --out at the "
            "folder of the interrupted run"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means the file is unusable; say which
        raise CheckpointError(
            f"cannot resume from {path}: the file is corrupted or not a training state ({exc})"
        ) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"cannot resume from {path}: unsupported training-state version "
            f"{state.get('version') if isinstance(state, dict) else '?'}"
        )
    return state
