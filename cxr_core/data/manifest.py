"""The manifest: one row per image, the single currency between dataset adapters and the rest.

Every adapter (NIH, CheXpert, class folders, per-disease folders) returns a :class:`Manifest`;
the cache, the torch Dataset, training, evaluation and ``cxr data inspect`` only ever read
manifests, so adding a dataset format never touches them.

Columns of ``Manifest.frame`` (in this order):

- ``image_id``: unique per row (file name or dataset-relative path)
- ``path``: absolute path of the image file (str)
- ``patient_id``: str; images of one patient never cross splits
- ``view``: "PA", "AP", "LATERAL", ... or "" when unknown
- ``split``: "train", "val", "test" or "" when not assigned yet
- one float column per class, named exactly as ``label_space.classes``:
  1.0 positive, 0.0 negative, NaN unknown (masked in losses and metrics).
  For multiclass label spaces each row is one-hot (exactly one 1.0).

Extra columns (age, sex, ...) may follow the label columns.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.labels import LabelSpace
from cxr_core.errors import DatasetError, UnknownClassError
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.csv_safe import read_table, write_frame_csv

BASE_COLUMNS: tuple[str, ...] = ("image_id", "path", "patient_id", "view", "split")
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _first_rows(frame: pd.DataFrame, mask: pd.Series | np.ndarray, limit: int = 5) -> str:
    rows = frame.loc[mask, "image_id"] if "image_id" in frame else frame.index[mask]
    shown = ", ".join(str(r) for r in list(rows)[:limit])
    more = int(np.sum(mask)) - limit
    return shown + (f" (and {more} more)" if more > 0 else "")


def _paths_within_dataset(paths: pd.Series) -> pd.Series:
    """Paths relative to the deepest folder holding every image, with "/" separators."""
    if paths.empty:
        return paths
    absolute = paths.map(os.path.abspath)
    root = os.path.commonpath([os.path.dirname(p) for p in absolute])
    return absolute.map(lambda p: os.path.relpath(p, root).replace(os.sep, "/"))


@dataclass
class Manifest:
    """A validated table of images plus the label space its label columns follow."""

    frame: pd.DataFrame
    label_space: LabelSpace
    source: str = ""

    def __post_init__(self) -> None:
        self.frame = self._validated(self.frame)

    def _validated(self, frame: pd.DataFrame) -> pd.DataFrame:
        classes = list(self.label_space.classes)
        missing = [c for c in (*BASE_COLUMNS, *classes) if c not in frame.columns]
        if missing:
            raise DatasetError(
                f"manifest from {self.source or 'unknown source'} lacks columns: {missing}"
            )
        extra = [c for c in frame.columns if c not in BASE_COLUMNS and c not in classes]
        frame = frame[[*BASE_COLUMNS, *classes, *extra]].reset_index(drop=True).copy()
        for col in ("image_id", "path", "patient_id", "view", "split"):
            frame[col] = frame[col].fillna("").astype(str)
        dup = frame["image_id"].duplicated(keep=False)
        if dup.any():
            raise DatasetError(
                f"duplicate image ids in {self.source or 'manifest'}: {_first_rows(frame, dup)}"
            )
        bad_split = ~frame["split"].isin(("", *SPLITS))
        if bad_split.any():
            raise DatasetError(
                f"unknown split names {sorted(set(frame.loc[bad_split, 'split']))}; use train/val/test"
            )
        labels = frame[classes].apply(pd.to_numeric, errors="coerce").astype("float32")
        invalid = ~(labels.isna() | labels.isin([0.0, 1.0])).all(axis=1)
        if invalid.any():
            raise DatasetError(
                f"label values other than 1/0/unknown in rows: {_first_rows(frame, invalid.to_numpy())}"
            )
        frame[classes] = labels
        if not self.label_space.multilabel:
            ones = labels.sum(axis=1, skipna=True)
            not_onehot = (ones != 1) | labels.isna().any(axis=1)
            if not_onehot.any():
                raise DatasetError(
                    "multiclass rows must carry exactly one class; offending rows: "
                    f"{_first_rows(frame, not_onehot.to_numpy())}"
                )
        return frame

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_space.classes

    def labels(self) -> np.ndarray:
        """(N, C) float32 with NaN for unknown."""
        return self.frame[list(self.classes)].to_numpy(dtype=np.float32, copy=True)

    def class_indices(self) -> np.ndarray:
        """(N,) int64 class index; multiclass only."""
        if self.label_space.multilabel:
            raise ValueError("class_indices() is for multiclass manifests")
        return np.argmax(self.labels(), axis=1).astype(np.int64)

    def split(self, name: str) -> Manifest:
        if name not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {name!r}")
        sub = self.frame[self.frame["split"] == name]
        if sub.empty:
            raise DatasetError(f"{self.source or 'manifest'} has no images in split '{name}'")
        return Manifest(sub, self.label_space, self.source)

    def with_frame(self, frame: pd.DataFrame) -> Manifest:
        return Manifest(frame, self.label_space, self.source)

    def fingerprint(self) -> str:
        """Hash of files, splits and labels: changes whenever what a model would see changes.

        Paths enter relative to the folder all images share, so the same dataset copied to
        another disk or machine keeps its fingerprint, and a model card's "same data" check
        holds wherever the data lives.
        """
        h = hashlib.sha256()
        h.update(json.dumps(self.label_space.to_dict(), sort_keys=True).encode())
        cols = ["image_id", "path", "patient_id", "split", *self.classes]
        frame = self.frame[cols].assign(path=_paths_within_dataset(self.frame["path"]))
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        return h.hexdigest()[:16]

    # Persistence: a CSV for humans and spreadsheets, a JSON sidecar for the label space.
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_frame_csv(self.frame, path)
        meta = {"label_space": self.label_space.to_dict(), "source": self.source}
        write_text_atomically(path.with_suffix(".labels.json"), json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        side = path.with_suffix(".labels.json")
        if not path.is_file() or not side.is_file():
            raise DatasetError(f"manifest {path} (and its {side.name}) not found")
        meta = json.loads(side.read_text())
        frame = read_table(
            path,
            dtype={"image_id": str, "patient_id": str, "view": str, "split": str, "path": str},
            keep_default_na=True,
        )
        return cls(frame, LabelSpace.from_dict(meta["label_space"]), meta.get("source", ""))


FRONTAL_VIEWS: tuple[str, ...] = ("PA", "AP", "AP SUPINE")
_VIEW_GROUPS = {"FRONTAL": FRONTAL_VIEWS}


def select_classes(manifest: Manifest, classes: Sequence[str]) -> Manifest:
    """The manifest restricted to ``classes`` (any known spelling), in the order given.

    Multilabel: the other label columns are dropped, every image stays. Multiclass: images of
    the other classes are left out (their count is noted in ``source``), since an exclusive label
    outside the subset cannot be expressed; at least two classes must remain.
    """
    space = manifest.label_space
    if not classes:
        raise UnknownClassError(
            f"no classes chosen; the {space.name} classes are: {', '.join(space.classes)}"
        )
    chosen = [space.classes[space.index(name)] for name in classes]
    if len(set(chosen)) != len(chosen):
        raise UnknownClassError(
            f"a class is chosen twice in {list(classes)} (names are harmonised)"
        )
    if tuple(chosen) == space.classes:
        return manifest
    frame, source = manifest.frame, manifest.source
    left_out = [c for c in space.classes if c not in chosen]
    if not space.multilabel:
        if len(chosen) < 2:
            raise UnknownClassError(
                f"a multiclass subset needs at least two classes, got {chosen}; a one-class model learns nothing"
            )
        keep = (frame[chosen] == 1).any(axis=1)
        source += f"; {int((~keep).sum())} images of {', '.join(left_out)} left out"
        frame = frame[keep]
    frame = frame.drop(columns=left_out)
    subset = LabelSpace(f"{space.name}-{len(chosen)}", tuple(chosen), space.task)
    return Manifest(frame, subset, source + f"; classes {', '.join(chosen)}")


def select_views(manifest: Manifest, views: Sequence[str]) -> Manifest:
    """Only the images whose ``view`` is one of ``views`` (case-insensitive; ``frontal`` = PA, AP
    and AP supine). Views are never filtered unless asked: every image a label file lists counts."""
    wanted = set()
    for view in views:
        key = view.strip().upper()
        wanted.update(_VIEW_GROUPS.get(key, (key,)))
    keep = manifest.frame["view"].str.upper().isin(wanted)
    if not keep.any():
        present = sorted(set(manifest.frame["view"].replace("", "unknown")))
        raise DatasetError(
            f"no image of {manifest.source or 'the dataset'} has view {', '.join(sorted(wanted))}; "
            f"its views are: {', '.join(present)}"
        )
    dropped = int((~keep).sum())
    note = (
        f"; views {', '.join(sorted(wanted))} ({dropped} other images left out)" if dropped else ""
    )
    return Manifest(manifest.frame[keep], manifest.label_space, manifest.source + note)
