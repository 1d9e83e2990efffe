"""Several datasets as one training manifest, their label spaces harmonised.

Datasets label different findings: NIH has no Lung Opacity, RSNA labels nothing but opacity,
the COVID-19 sets label three classes. Merged, a finding a dataset does not label is unknown
(NaN: left out of the loss and the metrics for its images), never negative, so a model is not
taught that every NIH film is free of lung opacity. Image and patient ids are prefixed with the
source's name (``nih:00000001_000.png``, ``nih:1``) because two datasets' patient 1 are two
people, and a ``source`` column keeps where each image came from for per-source counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import BASE_COLUMNS, Manifest
from cxr_core.errors import DatasetError

SOURCE_COLUMN = "source"
MERGED_NAME = "merged"


def _unique_names(manifests: Sequence[Manifest], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(manifests):
            raise DatasetError(f"{len(names)} source names for {len(manifests)} datasets")
        chosen = [str(n).strip() for n in names]
        if "" in chosen or len(set(chosen)) != len(chosen):
            raise DatasetError(f"source names must be distinct and non-empty, got {list(names)}")
        return chosen
    chosen, seen = [], {}
    for m in manifests:
        base = m.label_space.name
        seen[base] = seen.get(base, 0) + 1
        chosen.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return chosen


def _union_classes(manifests: Sequence[Manifest]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for m in manifests for c in m.classes))


def merge_manifests(manifests: Sequence[Manifest], names: Sequence[str] | None = None) -> Manifest:
    """One manifest over all of ``manifests``, ids and patients prefixed by source name.

    Multilabel sets merge over the union of their classes, unknown where a set does not label a
    class. Multiclass sets merge over the union too; a class a set lacks is then 0 for its
    images, which is known (the classes are exclusive). Mixing the two tasks is refused: an
    image cannot be both "exactly one of" and "any of".
    """
    if len(manifests) < 2:
        raise DatasetError("merging needs at least two datasets")
    tasks = {m.label_space.task for m in manifests}
    if len(tasks) > 1:
        raise DatasetError(
            "cannot merge multilabel and multiclass datasets ("
            + ", ".join(f"{m.label_space.name}: {m.label_space.task.value}" for m in manifests)
            + "); pick classes so that all are of one kind, or train them separately"
        )
    (task,) = tasks
    names = _unique_names(manifests, names)
    classes = _union_classes(manifests)
    fill = np.nan if manifests[0].label_space.multilabel else 0.0
    parts = []
    for name, m in zip(names, manifests):
        frame = m.frame.copy()
        for col in ("image_id", "patient_id"):
            frame[col] = f"{name}:" + frame[col]
        for cls in classes:
            if cls not in frame:
                frame[cls] = fill
        frame[SOURCE_COLUMN] = name
        parts.append(frame)
    merged = pd.concat(parts, ignore_index=True)
    extra = [c for c in merged.columns if c not in BASE_COLUMNS and c not in classes]
    merged = merged[[*BASE_COLUMNS, *classes, *extra]]
    source = f"{MERGED_NAME}: " + "; ".join(f"{n} = {m.source}" for n, m in zip(names, manifests))
    return Manifest(merged, LabelSpace(MERGED_NAME, classes, task), source)


def per_source_counts(manifest: Manifest) -> dict:
    """Images, patients and positive / negative / unknown per class for each source of a merged
    manifest ({} for a single dataset)."""
    frame = manifest.frame
    if SOURCE_COLUMN not in frame:
        return {}
    out = {}
    for name, part in frame.groupby(SOURCE_COLUMN, sort=False):
        classes = {}
        for cls in manifest.classes:
            col = part[cls]
            pos, known = int((col == 1).sum()), int(col.notna().sum())
            classes[cls] = {
                "positive": pos,
                "negative": known - pos,
                "unknown": int(len(col) - known),
            }
        out[str(name)] = {
            "images": int(len(part)),
            "patients": int(part["patient_id"].nunique()),
            "classes": classes,
        }
    return out
