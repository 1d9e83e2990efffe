"""How well heatmaps point at radiologist-drawn boxes (NIH ``BBox_List_2017.csv``).

Two standard measures, per box:

- pointing game: does the heatmap's maximum fall inside the box? It is compared with a
  pointer that always picks the image centre, because large findings (cardiomegaly) cover
  the centre and make any pointer look good;
- IoU between the box and the heatmap region above a level (default 0.5 of the map's range).

Boxes are given in the 1024-pixel space of the original NIH release and are scaled to the
resolution of the image actually read (our copies are 256 px).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from cxr_core.data.imaging import load_image
from cxr_core.data.labels import canonical_name
from cxr_core.errors import DatasetError
from cxr_core.inference.burned_in import burned_in_text_mask
from cxr_core.inference.lungs import heatmap_mass_in_mask

if TYPE_CHECKING:
    from cxr_core.inference.lungs import LungSegmenter
    from cxr_core.inference.predictor import Predictor

NIH_ORIGINAL_SIZE = 1024
# NIH box file spellings that canonical_name() does not cover.
_BOX_ALIASES = {"infiltrate": "Infiltration"}
BOX_COLUMNS = ("image_id", "finding", "x", "y", "w", "h")
MASK_SETTINGS = ("border", "mask_text")
"""Per-box columns naming how a heatmap was masked; :func:`summarise` reports each combination."""


def harmonise_finding(name: str) -> str:
    """Box-file finding name → canonical class name (``Effusion`` → ``Pleural Effusion``,
    ``Infiltrate`` → ``Infiltration``)."""
    return _BOX_ALIASES.get(name.strip().lower(), canonical_name(name))


def load_bboxes(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Boxes as a frame ``image_id, finding, x, y, w, h`` (original 1024-px coordinates).

    The official file's header names one column ``Bbox [x,y,w,h]`` for four values and ends
    with empty ``Unnamed`` columns, so it is read positionally rather than by header.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"bounding box file {path} not found")
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or len(header) < 3 or header[0].strip().lower() != "image index":
            raise DatasetError(
                f"{path}: expected the NIH box list header 'Image Index, Finding Label, Bbox [x,y,w,h]', got {header}"
            )
        for line_no, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue
            try:
                x, y, w, h = (float(v) for v in fields[2:6])
            except ValueError:
                raise DatasetError(
                    f"{path}, line {line_no}: box values {fields[2:6]} are not four numbers"
                ) from None
            if w <= 0 or h <= 0:
                raise DatasetError(
                    f"{path}, line {line_no}: box width/height must be positive, got w={w}, h={h}"
                )
            rows.append((fields[0].strip(), harmonise_finding(fields[1]), x, y, w, h))
    if not rows:
        raise DatasetError(f"{path}: contains no boxes")
    return pd.DataFrame(rows, columns=list(BOX_COLUMNS))


def scale_box(
    box: Sequence[float], shape: tuple[int, int], original_size: int = NIH_ORIGINAL_SIZE
) -> tuple[float, ...]:
    """(x, y, w, h) from ``original_size`` pixel space to an image of ``shape`` (H, W)."""
    x, y, w, h = box
    sy, sx = shape[0] / original_size, shape[1] / original_size
    return x * sx, y * sy, w * sx, h * sy


def box_mask(shape: tuple[int, int], box: Sequence[float]) -> np.ndarray:
    """Boolean (H, W) mask of pixels whose centres lie inside ``box`` = (x, y, w, h) in pixels."""
    x, y, w, h = box
    cols = np.arange(shape[1]) + 0.5
    rows = np.arange(shape[0]) + 0.5
    inside_x = (cols >= x) & (cols <= x + w)
    inside_y = (rows >= y) & (rows <= y + h)
    return inside_y[:, None] & inside_x[None, :]


def _inside(point: tuple[float, float], box: Sequence[float]) -> bool:
    row, col = point
    x, y, w, h = box
    return x <= col <= x + w and y <= row <= y + h


def pointing_hit(heatmap: np.ndarray, box: Sequence[float]) -> bool:
    """Whether the heatmap's maximum (pixel centre) lies inside ``box`` (pixels of the heatmap)."""
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return _inside((row + 0.5, col + 0.5), box)


def center_hit(shape: tuple[int, int], box: Sequence[float]) -> bool:
    """The baseline pointer: whether the image centre lies inside ``box``."""
    return _inside((shape[0] / 2, shape[1] / 2), box)


def heatmap_iou(heatmap: np.ndarray, box: Sequence[float], level: float = 0.5) -> float:
    """IoU of {heatmap ≥ level × max} with the box mask."""
    peak = float(np.max(heatmap))
    region = heatmap >= level * peak if peak > 0 else np.zeros(heatmap.shape, dtype=bool)
    mask = box_mask(heatmap.shape, box)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


@dataclass
class LocalisationResult:
    """Per-box outcomes and their per-class summary (last row ``All``)."""

    per_box: pd.DataFrame
    summary: pd.DataFrame
    skipped: dict[str, int]

    def format_table(self) -> str:
        table = self.summary.copy()
        for col in ("hit_rate", "center_hit_rate", "mean_iou", "mean_in_lung"):
            if col in table:
                table[col] = table[col].map(lambda v: f"{v:.3f}")
        return table.to_string(index=False)


def summarise(per_box: pd.DataFrame) -> pd.DataFrame:
    """Per masking (the :data:`MASK_SETTINGS` columns present) and class: n boxes, pointing hit rate,
    centre-pointer hit rate, mean IoU, plus ``All``; with an ``in_lung`` column also the mean share
    of heatmap mass inside the lungs."""
    settings = [column for column in MASK_SETTINGS if column in per_box]

    def row(setting: tuple, name: str, part: pd.DataFrame) -> dict:
        out = {
            **dict(zip(settings, setting)),
            "class": name,
            "n_boxes": int(len(part)),
            "hit_rate": float(part["hit"].mean()),
            "center_hit_rate": float(part["center_hit"].mean()),
            "mean_iou": float(part["iou"].mean()),
        }
        if "in_lung" in part:
            out["mean_in_lung"] = float(part["in_lung"].mean())
        return out

    rows = []
    for setting, scored in per_box.groupby(settings, sort=True):
        rows += [row(setting, name, part) for name, part in scored.groupby("finding", sort=True)]
        rows.append(row(setting, "All", scored))
    return pd.DataFrame(rows)


def _usable_boxes(
    boxes: pd.DataFrame, classes: Sequence[str], images_dir: Path
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The boxes of a model class whose image is in ``images_dir``, and counts of the others."""
    in_model = boxes["finding"].isin(classes)
    present = boxes["image_id"].map(lambda name: (images_dir / name).is_file())
    skipped = {
        "finding not a model class": int((~in_model).sum()),
        "image not found": int((in_model & ~present).sum()),
    }
    usable = boxes[in_model & present]
    if usable.empty:
        raise DatasetError(
            f"no box in the list names a class of this model ({', '.join(classes)}) "
            f"with its image in {images_dir}"
        )
    return usable, skipped


def _box_records(
    heatmap: np.ndarray,
    rows: pd.DataFrame,
    keys: dict,
    extra: dict,
    level: float,
    original_size: int,
) -> list[dict]:
    """One record per box of an (image, finding): ``keys``, how the heatmap meets the box, ``extra``."""
    records = []
    for _, row in rows.iterrows():
        box = scale_box((row.x, row.y, row.w, row.h), heatmap.shape, original_size)
        records.append(
            {
                **keys,
                "hit": pointing_hit(heatmap, box),
                "center_hit": center_hit(heatmap.shape, box),
                "iou": heatmap_iou(heatmap, box, level),
                **extra,
            }
        )
    return records


def evaluate_localisation(
    predictor: Predictor,
    boxes: pd.DataFrame,
    images_dir: str | os.PathLike[str],
    *,
    method: str = "gradcam",
    layer: str | None = None,
    borders: Sequence[float] | None = None,
    mask_text: Sequence[bool] | None = None,
    level: float = 0.5,
    batch_size: int = 8,
    original_size: int = NIH_ORIGINAL_SIZE,
    progress: bool = True,
    lungs: LungSegmenter | None = None,
) -> LocalisationResult:
    """Explain each boxed finding the model knows and score the heatmap against the box.

    Boxes whose finding is not a class of the model, or whose image is not in ``images_dir``,
    are skipped and counted in ``skipped``. One heatmap serves all boxes of an (image, class).
    With ``lungs`` each box also gets ``in_lung``: the share of its heatmap's mass inside the
    lung mask of its image (a heatmap of a lung finding that lies outside the lungs is suspect).
    ``layer`` goes to :func:`~cxr_core.inference.explain.explain_batch`; each map is scored once
    per entry of ``borders`` and of ``mask_text`` (masked with
    :func:`~cxr_core.inference.explain.mask_border`, with or without the image's burned-in text;
    default: the dashboard's masking only), so comparing maskings costs no extra heatmaps.
    """
    from cxr_core.inference.explain import (
        DEFAULT_BORDER,
        DEFAULT_MASK_TEXT,
        explain_batch,
        mask_border,
    )

    borders = tuple(borders) if borders else (DEFAULT_BORDER,)
    text_settings = tuple(dict.fromkeys(mask_text)) if mask_text else (DEFAULT_MASK_TEXT,)

    images_dir = Path(images_dir)
    usable, skipped = _usable_boxes(boxes, predictor.classes, images_dir)
    pairs = list(usable.groupby(["image_id", "finding"], sort=True).groups.items())
    records = []
    lung_masks: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(pairs), desc=f"{method} heatmaps", unit="map", disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = [load_image(images_dir / image_id) for (image_id, _), _ in chunk]
        maps = explain_batch(
            predictor,
            images,
            [finding for (_, finding), _ in chunk],
            method,
            layer=layer,
            border=0.0,
            mask_text=False,
        )
        for ((image_id, finding), index), raw, image in zip(chunk, maps, images):
            if lungs is not None and image_id not in lung_masks:
                lung_masks[image_id] = lungs.segment(image.pixels).mask
            text = burned_in_text_mask(image.pixels) if any(text_settings) else None
            for border, masked_text in ((b, t) for b in borders for t in text_settings):
                heatmap = mask_border(raw, border, text if masked_text else None)
                keys = {
                    "image_id": image_id,
                    "finding": finding,
                    "border": float(border),
                    "mask_text": bool(masked_text),
                }
                in_lung = (
                    {"in_lung": heatmap_mass_in_mask(heatmap, lung_masks[image_id])}
                    if lungs is not None
                    else {}
                )
                boxes_here = usable.loc[index]
                records += _box_records(heatmap, boxes_here, keys, in_lung, level, original_size)
        bar.update(len(chunk))
    bar.close()
    per_box = pd.DataFrame(records)
    return LocalisationResult(per_box=per_box, summary=summarise(per_box), skipped=skipped)
