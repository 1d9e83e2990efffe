"""How well heatmaps point at radiologist-drawn boxes (NIH ``BBox_List_2017.csv``, RSNA Pneumonia's
opacity boxes, VinDr-CXR's readers' boxes: any format whose registry entry loads boxes).

Two standard measures, per box:

- pointing game: does the heatmap's maximum fall inside the box? It is compared with a
  pointer that always picks the image centre, because large findings (cardiomegaly) cover
  the centre and make any pointer look good;
- IoU between the box and the heatmap region above a level (default 0.5 of the map's range).

NIH and RSNA boxes are given in the 1024-pixel space of the original release (VinDr's in the
pixels of the file) and are scaled to the
resolution of the image actually read (our copies are 256 px).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from cxr_core.data.formats.boxes import read_nih_box_list
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
    """Boxes as a frame ``image_id, finding, x, y, w, h`` (original 1024-px coordinates), from
    NIH's ``BBox_List_2017.csv`` (plain or ``.gz``; the data layer's one reader of that file)."""
    return read_nih_box_list(path)


def scale_box(
    box: Sequence[float],
    shape: tuple[int, int],
    original_size: int = NIH_ORIGINAL_SIZE,
    original_shape: tuple[float, float] | None = None,
) -> tuple[float, ...]:
    """(x, y, w, h) from ``original_size`` (square) or ``original_shape`` (H, W) pixel space to an
    image of ``shape`` (H, W)."""
    x, y, w, h = box
    oh, ow = original_shape if original_shape is not None else (original_size, original_size)
    sy, sx = shape[0] / oh, shape[1] / ow
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


def _original_shape(box_row: pd.Series, shape: tuple[int, int]) -> tuple[float, float] | None:
    """The (H, W) a box table row's coordinates refer to: its ``height``/``width``, the image's own
    shape when those are NaN (VinDr: pixels of the file), None for NIH's list (``original_size``)."""
    if "width" not in box_row:
        return None
    if pd.isna(box_row["width"]) or pd.isna(box_row["height"]):
        return float(shape[0]), float(shape[1])
    return float(box_row["height"]), float(box_row["width"])


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


def _with_paths(boxes: pd.DataFrame, images_dir: str | os.PathLike[str] | None) -> pd.DataFrame:
    """``boxes`` with a ``path`` per box: a format's box table has one, NIH's list names images by
    file name in ``images_dir``."""
    if "path" in boxes:
        return boxes
    if images_dir is None:
        raise DatasetError("NIH box lists name images by file name: pass the folder holding them")
    return boxes.assign(path=boxes["image_id"].map(lambda name: str(Path(images_dir) / name)))


def _usable_boxes(
    boxes: pd.DataFrame, classes: Sequence[str], images_dir: str | os.PathLike[str] | None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The boxes of a model class whose image is on disk, and counts of the others."""
    in_model = boxes["finding"].isin(classes)
    present = boxes["path"].map(os.path.isfile)
    skipped = {
        "finding not a model class": int((~in_model).sum()),
        "image not found": int((in_model & ~present).sum()),
    }
    usable = boxes[in_model & present]
    if usable.empty:
        raise DatasetError(
            f"no box in the list names a class of this model ({', '.join(classes)}) "
            f"with its image on disk ({images_dir or 'paths of the box table'})"
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
        box = scale_box(
            (row.x, row.y, row.w, row.h),
            heatmap.shape,
            original_size,
            _original_shape(row, heatmap.shape),
        )
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
    images_dir: str | os.PathLike[str] | None,
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

    ``boxes`` is NIH's list (images by name in ``images_dir``) or a box table of any format with
    boxes (``cxr_core.data.formats.load_box_table``: a ``path`` per box, and the ``width`` /
    ``height`` its coordinates refer to, NaN for the image's own pixels). Boxes whose finding is
    not a class of the model, or whose image is not on disk, are skipped and counted in
    ``skipped``. One heatmap serves all boxes of an (image, class).
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

    boxes = _with_paths(boxes, images_dir)
    usable, skipped = _usable_boxes(boxes, predictor.classes, images_dir)
    pairs = list(usable.groupby(["image_id", "finding"], sort=True).groups.items())
    records = []
    lung_masks: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(pairs), desc=f"{method} heatmaps", unit="map", disable=not progress)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = [load_image(usable.loc[index, "path"].iloc[0]) for _, index in chunk]
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
