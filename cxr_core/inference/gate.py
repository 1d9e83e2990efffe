"""The input gate: refuse what is not a chest radiograph, hold back calls on films unlike the training set.

A classifier scores anything it is given: noise got 9 NIH findings, pydicom's CT, MR and
ultrasound test files got chest findings, a child's film on the adult model 10 positives and an
adult film on the pediatric model "Pneumonia 1.00", all with at most a warning. The gate sits
in front of every prediction (the Predictor, hence ``cxr predict`` and the dashboard) and gives
each image one outcome (:mod:`cxr_core.inference.outcome`):

* **refused** (no probabilities): before the model runs, an image that cannot hold anatomy
  (:func:`check_quality`: blank, tiny, a strip) or whose DICOM header names another modality
  or body part (:func:`header_refusal`); after it, an image whose features are unlike every
  chest radiograph the gate was fitted on (the *chest* detector: noise, gradients, photos,
  documents, CT/MR/ultrasound frames). The content test does not need a header: PNG and JPEG
  uploads have none.
* **out of domain** (probabilities, no calls unless scored anyway): a chest film unlike the
  model's own training images (the *domain* detector: another population such as a child's
  film on an adult model, another source), a lateral view, a patient age outside the training
  ages, or (with a lung model) lungs that are not those of a frontal film.
* **scored** otherwise.

Both detectors are multi-layer feature Mahalanobis scores (:mod:`cxr_core.inference.domain`)
computed in the forward pass that gives the probabilities, so the gate costs next to nothing.
Their statistics and thresholds are stamped into the checkpoint by ``cxr gate fit``
(:mod:`cxr_core.inference.gate_fit`) without touching the weights; a checkpoint without them
gets the header and quality checks only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from cxr_core.errors import CheckpointError, UnsuitableImageError
from cxr_core.inference.domain import Detector
from cxr_core.inference.lungs import LungResult, LungSegmenter
from cxr_core.inference.outcome import OUT_OF_DOMAIN, REFUSED, SCORED, GateVerdict
from cxr_core.models.card import ModelCard

MIN_SIDE = 32  # pixels; a 1x1 or 1x100000 "image" holds no anatomy at any zoom
MAX_ASPECT = 4.0  # longest/shortest side; chest films are about 1:1.2, long-leg films reach 1:3
MIN_SPREAD = 0.05  # 1st-99th percentile range of pixels in [0, 1]; radiographs span > 0.5
CHEST_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})  # computed / digital / radiographic imaging
CHEST_BODY_PARTS = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS"})
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"})
GATE_VERSION = 2
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY]?)\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0, "": 1.0}

NOT_CHEST_REASON = (
    "does not look like a chest radiograph: its image content is unlike every chest film the model's "
    "input gate was fitted on (a photo, a document, noise, another modality?). Upload a chest X-ray "
    "exported from the CR/DX system."
)
OUT_OF_DOMAIN_REASON = (
    "The film is unlike the films this model was trained on (domain score {score:.1f}, threshold "
    "{threshold:.1f}: another population, view or source, for example a child's film on an adult "
    "model). Its findings are not called; check the film, or score it anyway to see the calls."
)


def check_quality(pixels: np.ndarray, name: str, meta: dict[str, Any] | None = None) -> None:
    """Refuse an image that cannot be a radiograph, with a message saying what is wrong."""
    if pixels.ndim != 2:
        raise UnsuitableImageError(
            f"{name}: expected a 2-D gray image, got an array of shape {pixels.shape}."
        )
    height, width = pixels.shape
    if min(height, width) < MIN_SIDE:
        raise UnsuitableImageError(
            f"{name}: the image is {width}x{height} pixels, too small to be a radiograph "
            f"(at least {MIN_SIDE} px per side). Upload the full-resolution export."
        )
    if max(height, width) / min(height, width) > MAX_ASPECT:
        raise UnsuitableImageError(
            f"{name}: the image is {width}x{height} pixels, an aspect ratio of "
            f"{max(height, width) / min(height, width):.0f}:1; a chest radiograph is roughly square. "
            "Check that this is the right file."
        )
    if meta and meta.get("constant"):
        raise UnsuitableImageError(
            f"{name}: the image is blank (every pixel has the same value); nothing to assess."
        )
    step = max(1, max(height, width) // 512)  # percentiles on a subsample: fast on 3000-px films
    low, high = np.percentile(pixels[::step, ::step], [1, 99])
    if high - low < MIN_SPREAD:
        raise UnsuitableImageError(
            f"{name}: the image is nearly uniform (98% of pixels within {high - low:.3f} of each other on a 0-1 "
            "scale); it is blank, over- or under-exposed, or not a radiograph."
        )


def header_refusal(meta: dict[str, Any] | None) -> str | None:
    """Why a DICOM header rules the image out (another modality or body part), else None."""
    if not meta or meta.get("format") != "DICOM":
        return None
    modality = str(meta.get("modality") or "").strip().upper()
    if modality and modality not in CHEST_MODALITIES:
        return (
            f"its DICOM Modality is {modality}, not a radiograph (CR/DX): this model only reads chest "
            "X-rays."
        )
    body_part = str(meta.get("body_part") or "").strip().upper()
    if body_part and body_part not in CHEST_BODY_PARTS:
        return f"its DICOM BodyPartExamined is {body_part}, not CHEST: this model only reads chest X-rays."
    return None


def dicom_age_years(value: Any) -> float | None:
    """A DICOM Age String ("045Y", "006M", "010W", "003D") in years; None when absent or unreadable."""
    if value is None:
        return None
    match = _AGE.match(str(value))
    if not match:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]


def training_age_range(ages: Sequence[float] | np.ndarray) -> list[float] | None:
    """[youngest, oldest] training age in years, or None when the data carry no ages."""
    values = np.asarray(ages, dtype=np.float64)
    values = values[np.isfinite(values)]
    return [float(values.min()), float(values.max())] if values.size else None


class InputGate:
    """What a Predictor checks about each image, built from one model card and its statistics."""

    def __init__(
        self,
        card: ModelCard | None = None,
        *,
        domain: Detector | None = None,
        chest: Detector | None = None,
        lungs: LungSegmenter | None = None,
    ) -> None:
        """``domain``/``chest``: the fitted detectors (None: that check is skipped); ``lungs``: the
        lung model whose check joins the out-of-domain checks (None: no lung check)."""
        # New cards record the training ages in their data section; older ones (the bundled
        # models) get them from `cxr gate fit`, which reads them off the training manifest.
        age = (
            (card.data.get("age_range") or card.gate.get("age_range")) if card is not None else None
        )
        try:
            self.age_range: tuple[float, float] | None = (
                (float(age[0]), float(age[1])) if age else None
            )
        except (TypeError, ValueError, IndexError, KeyError):
            raise CheckpointError(
                f"the model card's training age range {age!r} is not [youngest, oldest]"
            ) from None
        self.domain = domain
        self.chest = chest
        self.lungs = lungs

    @classmethod
    def of_checkpoint(
        cls, card: ModelCard, tensors: dict[str, torch.Tensor], lungs: LungSegmenter | None = None
    ) -> InputGate:
        """The gate a checkpoint's card and stored statistics describe (header and quality checks
        only when it was never fitted, or fitted by a version of ``cxr gate fit`` before 2)."""
        section = card.gate or {}
        if section.get("version") != GATE_VERSION or not tensors:
            return cls(card, lungs=lungs)
        detectors = {
            name: Detector.from_storage(tensors, section[name], name)
            for name in ("domain", "chest")
            if name in section
        }
        return cls(card, lungs=lungs, **detectors)

    @property
    def measures_features(self) -> bool:
        """Whether the gate needs the model's layer features (it has a fitted detector)."""
        return self.domain is not None or self.chest is not None

    # ------------------------------------------------------------------ before the model

    def refuse_early(self, pixels: np.ndarray, name: str, meta: dict[str, Any] | None) -> None:
        """Raise ``UnsuitableImageError`` for what needs no model to refuse: no anatomy possible
        (:func:`check_quality`) or a header naming another modality or body part."""
        check_quality(pixels, name, meta)
        refusal = header_refusal(meta)
        if refusal:
            raise UnsuitableImageError(f"{name}: {refusal}")

    def segment_lungs(self, pixels: np.ndarray) -> LungResult | None:
        """The lung mask and input check of one decoded image (float (H, W) in [0, 1]); None without a lung model.

        Separate from :meth:`verdict` so a caller that also shows or saves the mask (the
        dashboard, ``cxr predict --lungs``) segments each image once.
        """
        return self.lungs.segment(pixels) if self.lungs is not None else None

    def header_warnings(self, meta: dict[str, Any] | None) -> list[str]:
        """Out-of-domain findings from the header: a lateral view, an age outside the training ages."""
        if not meta or meta.get("format") != "DICOM":
            return []
        out = []
        view = str(meta.get("view_position") or "").strip().upper()
        if view in LATERAL_VIEWS:
            out.append(
                f"lateral view ({view}): the model was trained on frontal (PA/AP) films only."
            )
        age = dicom_age_years(meta.get("patient_age"))
        if (
            age is not None
            and self.age_range is not None
            and not self.age_range[0] <= age <= self.age_range[1]
        ):
            out.append(
                f"patient age {age:g} years is outside the training ages "
                f"({self.age_range[0]:g}-{self.age_range[1]:g} years)."
            )
        return out

    # ------------------------------------------------------------------ after the model

    def feature_scores(
        self, features: Sequence[np.ndarray]
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(chest scores, domain scores) of a batch's layer features; None for a missing detector."""
        return (
            self.chest.scores(features) if self.chest is not None else None,
            self.domain.scores(features) if self.domain is not None else None,
        )

    def verdict(
        self,
        meta: dict[str, Any] | None,
        *,
        lungs: LungResult | None = None,
        chest_score: float | None = None,
        domain_score: float | None = None,
    ) -> GateVerdict:
        """The outcome of an image the model has scored (its early refusals already passed), from
        its file's metadata (``LoadedImage.meta``; None for a bare array) and the scores."""
        if chest_score is not None and chest_score > self.chest.threshold:
            return GateVerdict(REFUSED, f"The image {NOT_CHEST_REASON}", (NOT_CHEST_REASON,))
        warnings = self.header_warnings(meta)
        if lungs is not None and lungs.check.warning:
            warnings.append(lungs.check.warning)
        if domain_score is not None and domain_score > self.domain.threshold:
            warnings.append(
                OUT_OF_DOMAIN_REASON.format(score=domain_score, threshold=self.domain.threshold)
            )
        if not warnings:
            return GateVerdict(SCORED)
        return GateVerdict(OUT_OF_DOMAIN, warnings[0], tuple(warnings))
