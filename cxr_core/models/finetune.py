"""Which parameters train: the fine-tuning policies.

Policies (the ``finetune`` field of a training config):

- ``"all"``: every parameter trains.
- ``"head"``: only the classifier trains (a linear probe on frozen features).
- ``"last:N"``: the last N feature blocks of the architecture (``ModelSpec.blocks``) + head.
- a list of parameter-name prefixes, e.g. ``["layer2", "layer3", "layer4"]`` for ResNet50 as
  in the NIH 14-label recipe (or the same as one comma-separated string) + head.

BatchNorm decision: in frozen parts the running statistics stay at their pretrained values
(updating them from small X-ray batches while the affine weights stay fixed silently
shifts the frozen features). ``model.train()`` switches every BatchNorm back to updating,
so the training loop calls :func:`freeze_bn_stats` after each ``model.train()``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.models.registry import get_model_spec

POLICY_HELP = "use 'all', 'head', 'last:N' or a list of layer-name prefixes such as layer3,layer4"


def _matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _trainable_prefixes(
    model: nn.Module, name: str, policy: str | Sequence[str]
) -> list[str] | None:
    """Prefixes of the parameters that train, or ``None`` for all of them."""
    spec = get_model_spec(name)
    if isinstance(policy, str):
        text = policy.strip()
        if text == "all":
            return None
        if text == "head":
            return [spec.head]
        if text.startswith("last:"):
            blocks = spec.blocks(model)
            try:
                n = int(text.removeprefix("last:"))
            except ValueError:
                raise ConfigError(
                    f"fine-tune policy {policy!r}: N in 'last:N' must be a whole number"
                ) from None
            if not 1 <= n <= len(blocks):
                raise ConfigError(
                    f"fine-tune policy {policy!r}: {name} has {len(blocks)} blocks, so N must be 1..{len(blocks)}"
                )
            return [spec.head, *(p for block_name, _ in blocks[-n:] for p in block_name.split("+"))]
        prefixes = [p.strip() for p in text.split(",") if p.strip()]
    else:
        prefixes = [str(p).strip() for p in policy]
    if not prefixes:
        raise ConfigError(f"empty fine-tune policy; {POLICY_HELP}")
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in prefixes if not any(_matches(n, p) for n in names)]
    if unknown:
        children = ", ".join(n for n, _ in model.named_children())
        raise ConfigError(
            f"fine-tune policy names {unknown}, which match no parameter of {name}; "
            f"{POLICY_HELP} (top-level modules of {name}: {children})"
        )
    return [spec.head, *prefixes]


def apply_finetune(model: nn.Module, name: str, policy: str | Sequence[str] = "all") -> int:
    """Set ``requires_grad`` according to ``policy``; returns the number of trainable parameters."""
    prefixes = _trainable_prefixes(model, name, policy)
    for param_name, param in model.named_parameters():
        param.requires_grad_(prefixes is None or any(_matches(param_name, p) for p in prefixes))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_bn_stats(model: nn.Module) -> int:
    """Put BatchNorm layers whose parameters are all frozen into eval mode; returns how many.

    Call after every ``model.train()``: the frozen layers then normalise with their
    pretrained running statistics and never update them.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()
                frozen += 1
    return frozen
