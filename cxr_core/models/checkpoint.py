"""Checkpoint files: safetensors weights plus a JSON model card, never pickles.

A checkpoint is one ``.safetensors`` file. The weights are plain tensors; everything a reader
needs to use or judge the model (architecture, classes, preprocessing, decision thresholds,
where the data came from, how well it did on validation) travels as JSON in the safetensors
metadata under ``cxr_model_card``. Nothing in the file is ever executed on load, which is why
PyTorch ``.pt``/``.pth`` pickles are refused outright: unpickling one can run arbitrary code.

Files are written atomically (temporary file in the same folder, fsync, rename), so a crash or
a full disk leaves either the old checkpoint or the new one, never a torn file. A SHA-256 of
the tensor bytes is stored alongside the card so silent corruption is caught on load.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError
from cxr_core.models.card import ModelCard
from cxr_core.models.ensemble import build_ensemble
from cxr_core.models.registry import create_model
from cxr_core.models.weights import check_fit
from cxr_core.utils.atomic import write_atomically

CARD_KEY = "cxr_model_card"
DIGEST_KEY = "cxr_weights_sha256"
_PICKLE_HINT = (
    "cxr only loads .safetensors checkpoints, because unpickling a PyTorch .pt/.pth file can run "
    "arbitrary code. A plain state dict becomes a checkpoint with `cxr import --weights FILE --arch NAME "
    "--classes LIST` (read without running code); or retrain with `cxr train`, which writes safetensors "
    "files with a model card."
)


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], card: ModelCard, *, half: bool = False
) -> Path:
    """Write weights + model card as one safetensors file, atomically.

    ``half=True`` stores floating-point weights as float16, halving the file (bundled models
    must stay under 50 MB); :func:`load_checkpoint` casts them back to float32.
    """
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        t = value.detach().to("cpu").clone().contiguous()  # clone: safetensors refuses shared storage
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[name] = t
    card = replace(card, weights_dtype="float16" if half else "float32")
    metadata = {CARD_KEY: card.to_json(), DIGEST_KEY: _weights_digest(tensors), "format": "pt"}
    return write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _sniff_format(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser touches it."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    header_len = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and header_len <= size - 8:
        return  # a safetensors header; its length may start with any byte, 0x80 included
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise CheckpointError(f"{path} is a PyTorch pickle (.pt/.pth), not a safetensors file. {_PICKLE_HINT}")
    if len(head) < 9:
        raise CheckpointError(f"{path} is truncated or empty ({size} bytes); it is not a usable checkpoint")
    raise CheckpointError(f"{path} is not a safetensors checkpoint (or it is truncated/corrupted). {_PICKLE_HINT}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model card and float32 weights on the CPU."""

    path: Path
    card: ModelCard
    state_dict: dict[str, torch.Tensor]

    @property
    def label_space(self) -> LabelSpace:
        return self.card.get_label_space()

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.card.get_preprocess()

    def _empty_model(self, device: str | None = None) -> nn.Module:
        c = self.card
        with torch.device(device) if device else contextlib.nullcontext():
            if c.members:
                return build_ensemble(c.members, c.num_classes)
            return create_model(c.architecture, c.num_classes, weights=None, in_chans=c.in_chans, dropout=c.dropout)

    def build_model(self) -> nn.Module:
        """A fresh model in eval mode with these weights (strict: every key must fit)."""
        model = self._empty_model()
        check_fit(model.state_dict(), self.state_dict, self.path)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def read_model_card(path: str | Path) -> ModelCard:
    """Only the card, without reading the weights (for listings and the dashboard)."""
    return _read_header(Path(path))[0]


def _read_header(path: Path) -> tuple[ModelCard, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _sniff_format(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError as exc:
        raise CheckpointError(f"{path} is corrupted or truncated ({exc}); restore it or retrain") from None
    if CARD_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file without a cxr model card; it was not written by `cxr train`, "
            "so its architecture, classes and preprocessing are unknown. If it holds a state dict, "
            "`cxr import --weights FILE --arch NAME --classes LIST` turns it into a checkpoint"
        )
    return ModelCard.from_json(metadata[CARD_KEY]), metadata


def load_checkpoint(
    path: str | Path,
    *,
    expect_architecture: str | None = None,
    expect_classes: Sequence[str] | None = None,
) -> Checkpoint:
    """Read and verify a checkpoint; every failure is a :class:`CheckpointError` saying why."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    card, metadata = _read_header(path)
    if expect_architecture is not None and card.architecture != expect_architecture:
        raise CheckpointError(
            f"{path} holds a {card.architecture} model, but {expect_architecture} was expected"
        )
    if expect_classes is not None and tuple(expect_classes) != card.classes:
        raise CheckpointError(
            f"{path} predicts classes {list(card.classes)}, but {list(expect_classes)} were expected"
        )
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(f"{path} is corrupted or truncated ({exc}); restore it or retrain") from None
    digest = metadata.get(DIGEST_KEY)
    if digest is not None and digest != _weights_digest(tensors):
        raise CheckpointError(f"{path} is corrupted: its weights do not match the checksum stored with them")
    state_dict = {
        k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v) for k, v in tensors.items()
    }
    ckpt = Checkpoint(path=path, card=card, state_dict=state_dict)
    # Keys and shapes only: a model on the meta device allocates nothing (VGG16 2.6 s -> 0.03 s).
    check_fit(ckpt._empty_model("meta").state_dict(), state_dict, path)
    return ckpt
