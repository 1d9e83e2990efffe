"""Ensembles: several trained models scored as one.

Averaging the logits of independently trained networks is the cheapest reliable gain on small
training sets. An :class:`Ensemble` is an ordinary ``nn.Module`` with logits out, so training
code aside, everything downstream (checkpoints, evaluation, the Predictor, Grad-CAM, the
dashboard) treats it like any other model. Members may have been trained at different input
sizes: the ensemble is fed at the largest and resizes for each smaller member with the same
antialiased bilinear interpolation that preprocessing uses, which (being linear) commutes
with the per-channel normalisation, so each member sees exactly its own evaluation input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cxr_core.errors import CheckpointError
from cxr_core.models.registry import create_model, get_model_spec, list_models


@dataclass(frozen=True)
class MemberSpec:
    """How to rebuild one member: what a model card stores per member."""

    architecture: str
    input_size: int
    in_chans: int = 3
    dropout: float = 0.0

    @classmethod
    def from_dict(cls, data: dict) -> MemberSpec:
        try:
            return cls(
                str(data["architecture"]),
                int(data["input_size"]),
                int(data.get("in_chans", 3)),
                float(data.get("dropout", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"ensemble member entry {data!r} is incomplete ({exc}); the model card is damaged"
            ) from None


class Ensemble(nn.Module):
    """Mean of the members' logits; member ``i`` sees the input resized to ``input_sizes[i]``."""

    def __init__(self, members: Sequence[nn.Module], input_sizes: Sequence[int]) -> None:
        super().__init__()
        if not members or len(members) != len(input_sizes):
            raise ValueError(
                f"an ensemble needs one input size per member, got {len(members)} members and {len(input_sizes)} sizes"
            )
        self.members = nn.ModuleList(members)
        self.input_sizes = tuple(int(s) for s in input_sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = []
        for member, size in zip(self.members, self.input_sizes):
            view = (
                x
                if tuple(x.shape[-2:]) == (size, size)
                else F.interpolate(
                    x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
            )
            logits.append(member(view))
        return torch.stack(logits).mean(dim=0)


def build_ensemble(members: Sequence[dict], num_classes: int) -> Ensemble:
    """An untrained ensemble laid out as a model card's ``members`` describe it."""
    specs = [MemberSpec.from_dict(m) for m in members]
    unknown = sorted({s.architecture for s in specs} - set(list_models()))
    if unknown:
        raise CheckpointError(
            f"ensemble members use architectures {unknown}, which this version of cxr_core does not have "
            f"(available: {', '.join(list_models())}); upgrade cxr_core"
        )
    models = [
        create_model(s.architecture, num_classes, in_chans=s.in_chans, dropout=s.dropout)
        for s in specs
    ]
    return Ensemble(models, [s.input_size for s in specs])


def ensemble_target_layers(model: nn.Module, members: Sequence[dict]) -> list[nn.Module]:
    """Each member's Grad-CAM layer; pytorch-grad-cam averages their maps at input resolution."""
    if not isinstance(model, Ensemble):
        raise CheckpointError("the model card describes an ensemble, but the model is not one")
    return [
        get_model_spec(MemberSpec.from_dict(m).architecture).target_layer(member)
        for member, m in zip(model.members, members)
    ]
