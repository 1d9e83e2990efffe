"""Checkpoint files: safetensors weights plus a JSON model card, never pickles.

A checkpoint is one ``.safetensors`` file. The weights are plain tensors; everything a reader
needs to use or judge the model (architecture, classes, preprocessing, decision thresholds,
where the data came from, how well it did on validation) travels as JSON in the safetensors
metadata under ``cxr_model_card``. Nothing in the file is ever executed on load, which is why
PyTorch ``.pt``/``.pth`` pickles are refused outright: unpickling one can run arbitrary code.

Files are written atomically (temporary file in the same folder, fsync, rename), so a crash or
a full disk leaves either the old checkpoint or the new one, never a torn file. A SHA-256 of
the tensor bytes is stored alongside the card so silent corruption is caught on load, and one
checksum over the whole card, the weights and the gate statistics
(:mod:`cxr_core.models.card_signature`) refuses a card edited after cxr wrote it, naming the
fields that changed. A checkpoint of the format before that checksum is refused with the
command that signs it (``cxr card sign``): loading unsigned cards would make removing the
checksum a way around it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import CheckpointError
from cxr_core.models.card import MAX_CARD_BYTES, ModelCard
from cxr_core.models.card_signature import card_signature, changed_fields
from cxr_core.models.ensemble import MemberSpec, build_ensemble, ensemble_target_layers
from cxr_core.models.registry import create_model, get_model_spec, list_models
from cxr_core.models.weights import check_fit
from cxr_core.utils.atomic import write_atomically

CARD_KEY = "cxr_model_card"
DIGEST_KEY = "cxr_weights_sha256"
GATE_DIGEST_KEY = "cxr_gate_sha256"
SIGNATURE_KEY = "cxr_card_signature"
# Tensors under this prefix are the input gate's reference statistics, not model weights:
# they are kept out of the model's state dict and have their own checksum, so stamping them
# into a checkpoint leaves the weights and their checksum untouched.
GATE_PREFIX = "cxr_gate/"
_DTYPES = {"float32": torch.float32, "float16": torch.float16}
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


def _stored_tensors(state_dict: dict[str, torch.Tensor], *, half: bool) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        t = (
            value.detach().to("cpu").clone().contiguous()
        )  # clone: safetensors refuses shared storage
        if half and t.is_floating_point():
            t = t.to(torch.float16)
        tensors[name] = t
    return tensors


def _write(
    path: str | Path,
    weights: dict[str, torch.Tensor],
    gate: dict[str, torch.Tensor],
    card: ModelCard,
) -> Path:
    from safetensors.torch import save_file

    text = card.to_json()
    metadata = {CARD_KEY: text, DIGEST_KEY: _weights_digest(weights), "format": "pt"}
    tensors = dict(weights)
    if gate:
        tensors.update(
            {
                GATE_PREFIX + k: v.detach().to("cpu", torch.float32).contiguous()
                for k, v in gate.items()
            }
        )
        metadata[GATE_DIGEST_KEY] = _weights_digest(
            {k: v for k, v in tensors.items() if k.startswith(GATE_PREFIX)}
        )
    signature = card_signature(
        json.loads(text), metadata[DIGEST_KEY], metadata.get(GATE_DIGEST_KEY, "")
    )
    metadata[SIGNATURE_KEY] = json.dumps(signature, sort_keys=True)
    return write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    card: ModelCard,
    *,
    half: bool = False,
    gate: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write weights + model card (+ input-gate statistics) as one safetensors file, atomically.

    ``half=True`` stores floating-point weights as float16, halving the file (bundled models
    must stay under 50 MB); :func:`load_checkpoint` casts them back to float32.
    """
    if any(name.startswith(GATE_PREFIX) for name in state_dict):
        raise CheckpointError(
            f"weight names may not start with the reserved prefix {GATE_PREFIX!r}"
        )
    card = replace(card, weights_dtype="float16" if half else "float32")
    return _write(path, _stored_tensors(state_dict, half=half), dict(gate or {}), card)


def stamp_checkpoint(path: str | Path, card: ModelCard, gate: dict[str, torch.Tensor]) -> Path:
    """Rewrite a checkpoint with a new card and gate statistics, its weight tensors byte for byte.

    The stored weights are re-read (and verified) as stored, not cast, so the weights checksum
    stays what it was; only the card, the gate tensors and the card's checksum change.
    """
    path = Path(path)
    old = load_checkpoint(path)
    _check_same_model(path, old.card, card)
    return _rewrite(path, card, gate)


def sign_checkpoint(path: str | Path) -> ModelCard:
    """Sign the card of a checkpoint written before cards were signed (or knowingly edited):
    the card is checked as on every load, the weights against their checksum, and the file
    rewritten with the card as cxr reads it (fields an older card lacks written with their
    defaults, e.g. an empty ``gate``) and its checksum (``cxr card sign``). The weight and gate
    tensors are kept byte for byte."""
    path = Path(path)
    old = _load(path, signed=False)
    _rewrite(path, old.card, old.gate)
    return old.card


def _check_same_model(path: Path, old: ModelCard, card: ModelCard) -> None:
    if card.architecture != old.architecture or card.classes != old.classes:
        raise CheckpointError(
            f"{path}: a new card must describe the same model ({old.architecture}, {list(old.classes)})"
        )


def _rewrite(path: Path, card: ModelCard, gate: dict[str, torch.Tensor]) -> Path:
    """The weight tensors byte for byte (re-read as stored, not cast) under a new card and gate."""
    from safetensors.torch import load_file

    weights = {k: v for k, v in load_file(str(path)).items() if not k.startswith(GATE_PREFIX)}
    return _write(path, weights, gate, card)


def _sniff_format(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser touches it."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    header_len = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and header_len <= size - 8:
        return  # a safetensors header; its length may start with any byte, 0x80 included
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path} is a PyTorch pickle (.pt/.pth), not a safetensors file. {_PICKLE_HINT}"
        )
    if len(head) < 9:
        raise CheckpointError(
            f"{path} is truncated or empty ({size} bytes); it is not a usable checkpoint"
        )
    raise CheckpointError(
        f"{path} is not a safetensors checkpoint (or it is truncated/corrupted). {_PICKLE_HINT}"
    )


@dataclass
class Checkpoint:
    """A loaded, verified checkpoint: the model card, float32 weights on the CPU and the
    input gate's reference statistics (empty when the gate was never fitted)."""

    path: Path
    card: ModelCard
    state_dict: dict[str, torch.Tensor]
    gate: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def label_space(self) -> LabelSpace:
        return self.card.get_label_space()

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.card.get_preprocess()

    def build_model(self) -> nn.Module:
        """A fresh model in eval mode with these weights (their fit was checked on load)."""
        model = empty_model(self.card)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()

    def target_layers(self, model: nn.Module) -> list[nn.Module]:
        """The layers Grad-CAM reads in ``model`` (one per ensemble member)."""
        return target_layers(self.card, model)


def empty_model(card: ModelCard, device: str | None = None) -> nn.Module:
    """An untrained model laid out as ``card`` describes (the meta device allocates nothing)."""
    with torch.device(device) if device else contextlib.nullcontext():
        if card.members:
            return build_ensemble(card.members, card.num_classes)
        return create_model(
            card.architecture,
            card.num_classes,
            weights=None,
            in_chans=card.in_chans,
            dropout=card.dropout,
        )


def target_layers(card: ModelCard, model: nn.Module) -> list[nn.Module]:
    """The Grad-CAM layer of each model ``card`` describes, found in ``model`` (or a copy of it)."""
    if card.members:
        return ensemble_target_layers(model, card.members)
    return [get_model_spec(card.architecture).target_layer(model)]


def head_modules(card: ModelCard, model: nn.Module) -> list[nn.Module]:
    """The classifier head of each model ``card`` describes: their input is the pooled
    penultimate feature vector the input gate measures."""
    if card.members:
        models = list(model.members)
        names = [MemberSpec.from_dict(m).architecture for m in card.members]
    else:
        models, names = [model], [card.architecture]
    return [m.get_submodule(get_model_spec(n).head) for m, n in zip(models, names)]


def read_model_card(path: str | Path) -> ModelCard:
    """Only the card, without reading the weights (for listings and the dashboard); its
    checksum is verified, so an edited card is refused here too."""
    return _read_header(Path(path), signed=True)[0]


def _read_header(path: Path, *, signed: bool) -> tuple[ModelCard, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    _sniff_format(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path} is corrupted or truncated ({exc}); restore it or retrain"
        ) from None
    if CARD_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file without a cxr model card; it was not written by `cxr train`, "
            "so its architecture, classes and preprocessing are unknown. If it holds a state dict, "
            "`cxr import --weights FILE --arch NAME --classes LIST` turns it into a checkpoint"
        )
    try:
        card = ModelCard.from_json(metadata[CARD_KEY])
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if DIGEST_KEY not in metadata:
        raise CheckpointError(
            f"{path} has a model card but no weights checksum ({DIGEST_KEY}); every checkpoint cxr writes "
            "carries one, so this file was altered. Restore it or retrain."
        )
    if signed:
        _verify_signature(path, metadata)
    return card, metadata


def _verify_signature(path: Path, metadata: dict[str, str]) -> None:
    """The card, weights and gate checksums as signed; a difference names the changed fields."""
    text = metadata.get(SIGNATURE_KEY)
    if text is None:
        raise CheckpointError(
            f"{path} was written before model cards were signed (no {SIGNATURE_KEY}), so an edit to its "
            f"card (classes, thresholds, preprocessing) could not be detected. If the file is yours and "
            f"unmodified, sign it once: cxr card sign --checkpoint {path}"
        )
    try:
        signature = json.loads(text) if len(text) <= MAX_CARD_BYTES else None
    except ValueError:
        signature = None
    if not isinstance(signature, dict):
        raise CheckpointError(
            f"{path}: the model card's checksum entry is damaged; restore the file"
        )
    card = json.loads(metadata[CARD_KEY])
    expected = card_signature(card, metadata[DIGEST_KEY], metadata.get(GATE_DIGEST_KEY, ""))
    if signature.get("sha256") == expected["sha256"]:
        return
    changed = changed_fields(signature, card)
    what = (
        f"its card fields {', '.join(changed)} changed"
        if changed
        else "its weights or input-gate checksum entries changed"
    )
    raise CheckpointError(
        f"{path} was modified after cxr signed it: {what}. A card that was edited could swap classes or "
        "thresholds silently, so it is refused. Restore the file; if the edit was intended, re-sign it: "
        f"cxr card sign --checkpoint {path}"
    )


def load_checkpoint(
    path: str | Path,
    *,
    expect_architecture: str | None = None,
    expect_classes: Sequence[str] | None = None,
) -> Checkpoint:
    """Read and verify a checkpoint; every failure is a :class:`CheckpointError` saying why.

    Verified here, once, for every reader: the card (schema, via :class:`ModelCard`), the
    checksum over card, weights and gate, the architecture is one this version has, the
    weights and gate checksums (mandatory), and every weight is a
    finite float of the card's declared dtype (integers only where the model keeps counters)
    with the key and shape the architecture expects.
    """
    return _load(
        Path(path),
        signed=True,
        expect_architecture=expect_architecture,
        expect_classes=expect_classes,
    )


def _load(
    path: Path,
    *,
    signed: bool,
    expect_architecture: str | None = None,
    expect_classes: Sequence[str] | None = None,
) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card, metadata = _read_header(path, signed=signed)
    if expect_architecture is not None and card.architecture != expect_architecture:
        raise CheckpointError(
            f"{path} holds a {card.architecture} model, but {expect_architecture} was expected"
        )
    if expect_classes is not None and tuple(expect_classes) != card.classes:
        raise CheckpointError(
            f"{path} predicts classes {list(card.classes)}, but {list(expect_classes)} were expected"
        )
    _check_architecture_registered(card, path)
    try:
        tensors = load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path} is corrupted or truncated ({exc}); restore it or retrain"
        ) from None
    gate = {k[len(GATE_PREFIX) :]: v for k, v in tensors.items() if k.startswith(GATE_PREFIX)}
    weights = {k: v for k, v in tensors.items() if not k.startswith(GATE_PREFIX)}
    if metadata[DIGEST_KEY] != _weights_digest(weights):
        raise CheckpointError(
            f"{path} is corrupted: its weights do not match the checksum stored with them"
        )
    if gate and metadata.get(GATE_DIGEST_KEY) != _weights_digest(
        {GATE_PREFIX + k: v for k, v in gate.items()}
    ):
        raise CheckpointError(
            f"{path} is corrupted: its input-gate statistics do not match their checksum"
        )
    # Keys and shapes only: a model on the meta device allocates nothing (VGG16 2.6 s -> 0.03 s).
    expected = empty_model(card, "meta").state_dict()
    check_fit(expected, weights, path)
    _check_values(weights, expected, card.weights_dtype, path)
    for name, value in gate.items():
        if value.dtype != torch.float32 or not torch.isfinite(value).all():
            raise CheckpointError(
                f"{path}: input-gate statistic {name!r} is not finite float32; re-run `cxr gate fit`"
            )
    state_dict = {
        k: (v.float() if v.dtype in (torch.float16, torch.bfloat16) else v)
        for k, v in weights.items()
    }
    return Checkpoint(path=path, card=card, state_dict=state_dict, gate=gate)


def _check_values(
    weights: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], dtype: str, path: Path
) -> None:
    """Floating weights must be finite and of the declared dtype: an int8 or all-NaN file would
    otherwise load and predict NaN for every image."""
    declared = _DTYPES[dtype]
    for name, value in weights.items():
        if expected[name].is_floating_point():
            if value.dtype != declared:
                raise CheckpointError(
                    f"{path}: weight {name!r} is stored as {value.dtype} but the model card declares {dtype}; "
                    "the file was not written by cxr (or was altered). Restore it or retrain."
                )
            if not torch.isfinite(value).all():
                raise CheckpointError(
                    f"{path}: weight {name!r} contains NaN or infinite values; the model would predict NaN. "
                    "Restore the file or retrain (training diverged?)."
                )
        elif value.is_floating_point() or value.dtype != expected[name].dtype:
            raise CheckpointError(
                f"{path}: tensor {name!r} is {value.dtype}, expected {expected[name].dtype}"
            )


def _check_architecture_registered(card: ModelCard, path: Path) -> None:
    if card.members:
        return  # the ensemble builder names any member architecture this version lacks
    known = list_models() + list_models(segmentation=True)
    if card.architecture not in known:
        raise CheckpointError(
            f"{path}: architecture '{card.architecture}' is not available in this version of cxr_core "
            f"(available: {', '.join(sorted(known))}). Upgrade cxr_core or use a checkpoint of a listed architecture."
        )
