"""Bounding boxes as annotations: one table for NIH, RSNA Pneumonia and VinDr-CXR boxes.

Every box format becomes the same table (:data:`BOX_TABLE_COLUMNS`), which ``cxr explain-eval``
scores heatmaps against:

- ``image_id``, ``path``: the image, named and found as in the format's manifest;
- ``finding``: the harmonised finding name (``Effusion`` -> ``Pleural Effusion``);
- ``x``, ``y``, ``w``, ``h``: the box in pixels (top-left corner, width, height);
- ``reader``: who drew it (VinDr radiologist id), ``fused:N`` for a box fused from N readers'
  boxes, or "" when the release does not say;
- ``width``, ``height``: the pixel size the coordinates refer to (NIH and RSNA: 1024); NaN when
  the coordinates are in the pixels of the image file itself (VinDr's DICOMs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import read_label_csv
from cxr_core.data.labels import canonical_name
from cxr_core.errors import DatasetError

BOX_TABLE_COLUMNS: tuple[str, ...] = (
    "image_id",
    "path",
    "finding",
    "x",
    "y",
    "w",
    "h",
    "reader",
    "width",
    "height",
)
NIH_BOX_SIZE = 1024  # NIH and RSNA box coordinates refer to the 1024 px release images
_NIH_BOX_NAMES = ["image_id", "finding", "x", "y", "w", "h"]


def box_table(frame: pd.DataFrame, where: str) -> pd.DataFrame:
    """``frame`` checked and ordered as a box table: numbers, positive sizes, harmonised findings."""
    absent = [c for c in BOX_TABLE_COLUMNS if c not in frame]
    if absent:
        raise DatasetError(f"box table from {where} lacks {absent}")
    out = frame[list(BOX_TABLE_COLUMNS)].reset_index(drop=True).copy()
    for col in ("x", "y", "w", "h", "width", "height"):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
    bad = out[["x", "y", "w", "h"]].isna().any(axis=1) | (out["w"] <= 0) | (out["h"] <= 0)
    if bad.any():
        shown = ", ".join(out.loc[bad, "image_id"].astype(str).head(5))
        raise DatasetError(
            f"{where}: {int(bad.sum())} box(es) without four numbers or with a width/height <= 0 "
            f"(images {shown}); fix or remove those rows"
        )
    out["finding"] = out["finding"].astype(str).map(canonical_name)
    out["reader"] = out["reader"].fillna("").astype(str)
    return out


def read_nih_box_list(path: str | Path) -> pd.DataFrame:
    """NIH ``BBox_List_2017.csv`` (plain or ``.gz``) as ``image_id, finding, x, y, w, h``.

    The official header names one column ``Bbox [x,y,w,h]`` for four values and ends with empty
    ``Unnamed`` columns, so the file is read by position, not by header.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"bounding box file {path} not found")
    header = read_label_csv(path, "NIH box list", header_only=True).columns
    if len(header) < 3 or str(header[0]).strip().lower() != "image index":
        raise DatasetError(
            f"{path}: expected the NIH box list header 'Image Index, Finding Label, Bbox [x,y,w,h]', "
            f"got {list(header)}"
        )
    raw = read_label_csv(path, "NIH box list", header=None, skiprows=1, dtype=str)
    raw = raw.dropna(how="all")
    if raw.shape[1] < 6:
        raise DatasetError(f"{path}: box rows need 6 values (image, finding, x, y, w, h)")
    frame = raw.iloc[:, :6].set_axis(_NIH_BOX_NAMES, axis=1)
    numbers = frame[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    bad = numbers.isna().any(axis=1).to_numpy()
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise DatasetError(
            f"{path}, line {line}: box values {frame.iloc[line - 2, 2:6].tolist()} are not four numbers"
        )
    small = ((numbers["w"] <= 0) | (numbers["h"] <= 0)).to_numpy()
    if small.any():
        line = int(np.flatnonzero(small)[0]) + 2
        w, h = numbers.iloc[line - 2][["w", "h"]]
        raise DatasetError(
            f"{path}, line {line}: box width/height must be positive, got w={w}, h={h}"
        )
    frame = frame.assign(
        image_id=frame["image_id"].str.strip(),
        finding=frame["finding"].map(canonical_name),
        **{c: numbers[c].to_numpy() for c in ("x", "y", "w", "h")},
    )
    if frame.empty:
        raise DatasetError(f"{path}: contains no boxes")
    return frame.reset_index(drop=True)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _clusters(boxes: np.ndarray, readers: list[str], iou: float) -> list[list[int]]:
    """Greedy clusters of one image's boxes of one finding: a box joins the first cluster whose
    first box overlaps it by ``iou`` and holds no box of the same reader yet."""
    clusters: list[list[int]] = []
    for i in range(len(boxes)):
        for cluster in clusters:
            if (
                readers[i] not in {readers[j] for j in cluster}
                and _iou(boxes[cluster[0]], boxes[i]) >= iou
            ):
                cluster.append(i)
                break
        else:
            clusters.append([i])
    return clusters


def fuse_boxes(table: pd.DataFrame, *, iou: float = 0.4, min_readers: int = 1) -> pd.DataFrame:
    """Readers' boxes of the same finding on the same image merged where they overlap.

    Boxes of different readers overlapping by at least ``iou`` form one box whose coordinates
    are the readers' mean (the usual fusion of VinDr's three readings); ``reader`` becomes
    ``fused:N``. Clusters drawn by fewer than ``min_readers`` readers are left out (2: only boxes
    a majority of three readers agree on).
    """
    rows = []
    for (_, finding), part in table.groupby(["image_id", "finding"], sort=True):
        coords = part[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
        readers = part["reader"].tolist()
        for cluster in _clusters(coords, readers, iou):
            if len(cluster) < min_readers:
                continue
            first = part.iloc[cluster[0]]
            x0, y0 = coords[cluster, 0].mean(), coords[cluster, 1].mean()
            x1 = (coords[cluster, 0] + coords[cluster, 2]).mean()
            y1 = (coords[cluster, 1] + coords[cluster, 3]).mean()
            rows.append(
                {
                    **first.to_dict(),
                    "finding": finding,
                    "x": x0,
                    "y": y0,
                    "w": x1 - x0,
                    "h": y1 - y0,
                    "reader": f"fused:{len(cluster)}",
                }
            )
    return pd.DataFrame(rows, columns=list(BOX_TABLE_COLUMNS))
