"""The overlay a reader sees in the PACS: the film with an outline per called finding and a legend.

Outlines, not a colour wash, so the film stays readable everywhere but on a thin line: each
called finding's heatmap is outlined where it reaches :data:`OUTLINE_LEVEL` of its maximum, in
its own colour (Okabe-Ito, told apart with colour-vision deficiencies), most probable first.
The legend band under the film names each colour's finding with its probability and
threshold, the model, what an outline means and that this is not for diagnosis. It is burned
into the pixels (a Secondary Capture has no separate graphics layer every viewer shows).

The film is drawn at :data:`MIN_SIDE`-:data:`MAX_SIDE` pixels on its long side: small films
are enlarged so the legend text stays legible, large ones reduced so the object stays small.
"""

from __future__ import annotations

import textwrap

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxr_core.reporting.study import FindingCall, StudyResult

OUTLINE_LEVEL = 0.5
MIN_SIDE = 1024
MAX_SIDE = 2048
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
OUTLINE_MEANING = (
    "Outline: where the model drew its evidence ({method} map at {level:.0%} of its maximum), "
    "not the extent of the finding."
)
NOT_FOR_DIAGNOSIS = "Research software, not a medical device: NOT FOR DIAGNOSIS."


def colour_of(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th called finding (most probable first)."""
    return PALETTE[index % len(PALETTE)]


def display_scale(shape: tuple[int, int]) -> float:
    """Factor bringing a film's long side into [MIN_SIDE, MAX_SIDE]."""
    side = max(shape)
    return MIN_SIDE / side if side < MIN_SIDE else min(1.0, MAX_SIDE / side)


def film_rgb(pixels: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The film (float in [0, 1], bright = dense) as uint8 RGB, resized by ``scale``."""
    gray = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    if scale != 1.0:
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, size, interpolation=interpolation)
    return np.repeat(gray[..., None], 3, axis=2)


def outlined_film(result: StudyResult, scale: float | None = None) -> np.ndarray:
    """The film with the outline of each called finding's heatmap, uint8 RGB (no legend)."""
    if result.image is None:
        raise ValueError(f"{result.name}: the result carries no image to draw on")
    pixels = result.image.pixels
    scale = display_scale(pixels.shape) if scale is None else scale
    rgb = film_rgb(pixels, scale)
    thickness = max(2, round(max(rgb.shape[:2]) / 400))
    for index, finding in enumerate(result.called):
        heat = result.heatmaps.get(finding.name)
        if heat is None:
            continue
        heat = cv2.resize(heat.astype(np.float32), (rgb.shape[1], rgb.shape[0]))
        contours, _ = cv2.findContours(
            (heat >= OUTLINE_LEVEL).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(rgb, contours, -1, colour_of(index), thickness, lineType=cv2.LINE_AA)
    return rgb


def finding_label(finding: FindingCall) -> str:
    """'Pneumothorax: probability 0.612, threshold 0.420' (multiclass: 'most probable class')."""
    if finding.threshold is None:
        return f"{finding.name}: probability {finding.probability:.3f} (most probable class)"
    return (
        f"{finding.name}: probability {finding.probability:.3f}, threshold {finding.threshold:.3f}"
    )


def legend_lines(result: StudyResult) -> list[tuple[tuple[int, int, int] | None, str]]:
    """(swatch colour or None, text) per legend line, in order."""
    lines: list[tuple[tuple[int, int, int] | None, str]] = [
        (None, f"cxr AI overlay - model {result.model.name} ({result.model.version})"),
    ]
    lines += [(colour_of(i), finding_label(f)) for i, f in enumerate(result.called)]
    lines.append((None, OUTLINE_MEANING.format(method=result.heatmap_method, level=OUTLINE_LEVEL)))
    lines.append((None, f"Thresholds: {result.thresholds.describe()}."))
    lines.append((None, NOT_FOR_DIAGNOSIS))
    return lines


def _legend(width: int, lines: list[tuple[tuple[int, int, int] | None, str]]) -> np.ndarray:
    """A black band ``width`` pixels wide with the legend lines (wrapped) in white."""
    size = max(14, width // 48)
    font = ImageFont.load_default(size=size)
    swatch = size
    margin = size // 2
    chars = max(20, int((width - 3 * margin - swatch) / (0.55 * size)))
    wrapped = [(colour, textwrap.wrap(text, chars) or [""]) for colour, text in lines]
    height = margin * 2 + sum(len(parts) for _, parts in wrapped) * round(size * 1.3)
    band = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(band)
    y = margin
    for colour, parts in wrapped:
        if colour is not None:
            draw.rectangle([margin, y + 2, margin + swatch, y + 2 + swatch * 0.8], fill=colour)
        for part in parts:
            draw.text((2 * margin + swatch, y), part, fill=(255, 255, 255), font=font)
            y += round(size * 1.3)
    return np.asarray(band)


def burned_in_overlay(result: StudyResult) -> np.ndarray:
    """The Secondary Capture's pixels: the outlined film above its legend band, uint8 RGB."""
    film = outlined_film(result)
    return np.concatenate([film, _legend(film.shape[1], legend_lines(result))], axis=0)
