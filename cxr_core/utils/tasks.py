"""The kinds of prediction task: the one vocabulary every layer uses for them.

A ``str`` enum, so the values stored in model cards and reports stay the plain strings
``"multilabel"`` / ``"multiclass"`` and compare equal to them.
"""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    MULTILABEL = "multilabel"  # each class an independent yes/no finding (NIH, CheXpert)
    MULTICLASS = "multiclass"  # exactly one class per image (Normal vs Pneumonia)
    SEGMENTATION = "segmentation"  # one yes/no per pixel and class (lung masks)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object) -> Task:
        """The task named by ``value``; ValueError naming the known kinds otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"task must be one of {', '.join(repr(t.value) for t in cls)}, not {value!r}"
            ) from None


TTA_MODES: tuple[str, ...] = ("none", "hflip")
"""Test-time augmentation: none, or the mean with the mirrored image (:mod:`cxr_core.models.tta`).
Kept here, free of torch, so the command line can offer the choices without loading torch."""
