"""What every format with masks loads: image+mask pairs in memory (:class:`MaskSet`).

Apart from the ``masks`` folder adapter so that the registry, which names the type its mask
loaders return, imports no adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LUNG_TARGET = "lung"


@dataclass(frozen=True)
class MaskSet:
    """Images as uint8 ``(N, S, S)``, masks as bool ``(N, S, S)``, one id and patient per pair."""

    root: Path
    ids: tuple[str, ...]
    patients: tuple[str, ...]
    images: np.ndarray
    masks: np.ndarray
    target: str = LUNG_TARGET  # what the masks outline: "lung", or a finding such as "pneumothorax"

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | np.ndarray) -> MaskSet:
        idx = np.asarray(index, dtype=np.int64)
        return MaskSet(
            root=self.root,
            ids=tuple(self.ids[i] for i in idx),
            patients=tuple(self.patients[i] for i in idx),
            images=self.images[idx],
            masks=self.masks[idx],
            target=self.target,
        )
