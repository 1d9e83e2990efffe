"""The Predict page's pipeline for one uploaded film: decode → input gate → lungs → assess → calls.

Every step is cached per file content (SHA-1 of the upload), so a rerun, a film switch or a
second browser tab reuses what was computed: switching films costs a dictionary look-up, and a
new batch is scored one film at a time (the film on screen first, :func:`read_films` fills in
the rest while the reader already reads). Decoded films and lung masks are cached as shared
objects (``st.cache_resource``: a 2,500 × 2,048 film is 20 MB as float32, copying it on every
look-up would cost more than the look-up), never mutated.

The page only lays out the :class:`FilmReading` this module returns.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import streamlit as st

from cxr_core.artifacts.catalog import CheckpointEntry, checkpoint_digest
from cxr_core.artifacts.thresholds_store import ThresholdSet
from cxr_core.data.imaging import ImageLimits, LoadedImage, load_image
from cxr_core.errors import CXRError, UnsuitableImageError
from cxr_core.inference.class_flags import flagged_classes
from cxr_core.inference.explain import (
    DEFAULT_LAYER,
    METHODS,
    estimate_seconds,
    explain,
    forward_seconds,
    interactive_methods,
)
from cxr_core.inference.findings import FindingsSummary, summarise_findings
from cxr_core.inference.lungs import LungSegmenter, heatmap_mass_in_mask
from cxr_core.inference.outcome import REFUSED, UNREADABLE, GateVerdict
from cxr_core.inference.predictor import Prediction, Predictor
from dashboard import outcome_view, state, viewer

LIMITS = ImageLimits()
FILM_CACHE = 24
"""Decoded films kept in memory for all sessions (a 2,500 × 2,048 film is 20 MB as float32)."""

PENDING = "pending"
"""Beside the shared outcomes (:mod:`cxr_core.inference.outcome`): not scored yet in this run."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name, content digest and bytes."""

    name: str
    digest: str
    data: bytes = field(repr=False)

    @property
    def ident(self) -> str:
        return self.digest[:12]

    def getvalue(self) -> bytes:
        """The bytes, as Streamlit's ``UploadedFile`` gives them (for the report downloads)."""
        return self.data


@dataclass(frozen=True)
class PredictContext:
    """What scoring a film depends on besides the film: model, lung model, thresholds, flags."""

    entry: CheckpointEntry
    predictor: Predictor
    model_key: str  # checkpoint file and modification time: part of every cache key
    lungs: state.LungModel
    thresholds: dict[str, float]
    threshold_set: str
    flagged: Mapping[str, str]
    active: ThresholdSet  # the reader's set in force (its name is ``threshold_set``)

    @property
    def multilabel(self) -> bool:
        return self.predictor.label_space.multilabel


@dataclass(frozen=True)
class FilmReading:
    """One film as the page shows it: its outcome and, once scored, its findings."""

    upload: Upload
    outcome: str
    reason: str = (
        ""  # why refused, unreadable or out of domain: one sentence a clinician can act on
    )
    image: LoadedImage | None = field(default=None, repr=False)
    lungs: viewer.LungView | None = field(default=None, repr=False)
    prediction: Prediction | None = None
    summary: FindingsSummary | None = None

    @property
    def name(self) -> str:
        return self.upload.name

    @property
    def warnings(self) -> list[str]:
        return list(self.prediction.warnings) if self.prediction is not None else []


DIGESTS = "predict_digests"  # {upload's file_id: SHA-1 of its bytes}, per browser session


def _file_key(file) -> str:
    """Streamlit's id of one upload; a film handed over by the Worklist has none, its name serves."""
    return getattr(file, "file_id", None) or f"handed over:{file.name}"


def uploads(files: Sequence) -> list[Upload]:
    """The page's films (Streamlit ``UploadedFile`` or the Worklist's hand-over) as digests and
    bytes, in upload order.

    Each file is hashed once per upload (its ``file_id``): hashing eight 10 MB DICOMs again on
    every rerun would cost a switch between films a sixth of a second.
    """
    known = st.session_state.setdefault(DIGESTS, {})
    out = []
    for file in files:
        data = file.getvalue()
        digest = known.get(_file_key(file)) or hashlib.sha1(data).hexdigest()
        known[_file_key(file)] = digest
        out.append(Upload(file.name, digest, data))
    for stale in set(known) - {_file_key(file) for file in files}:
        del known[stale]
    return out


def context(entry: CheckpointEntry) -> PredictContext:
    """The shared, cached predictor and lung model of ``entry`` and the thresholds in force for this reader."""
    predictor = state.predictor(entry)
    active = state.active_thresholds(entry)
    return PredictContext(
        entry=entry,
        predictor=predictor,
        model_key=f"{entry.model_path}:{entry.model_path.stat().st_mtime}",
        lungs=state.lung_model(),
        thresholds=predictor.resolve_thresholds(active.thresholds),
        threshold_set=active.name,
        flagged=flagged_classes(entry.card),
        active=active,
    )


@st.cache_resource(max_entries=FILM_CACHE, show_spinner=False)
def _decode(digest: str, name: str, _data: bytes) -> LoadedImage | str:
    """The decoded film, or why it cannot be read (cached too: a bad file fails once)."""
    try:
        return load_image(_data, name=name, limits=LIMITS)
    except CXRError as exc:
        return str(exc)


@st.cache_resource(max_entries=FILM_CACHE, show_spinner=False)
def _gate(model_key: str, digest: str, _predictor: Predictor, _image: LoadedImage) -> str:
    """ "" when the input gate lets the film through, else its refusal (blank, too small...)."""
    try:
        _predictor.cache_array(_image)
    except UnsuitableImageError as exc:
        return str(exc)
    return ""


@st.cache_resource(max_entries=FILM_CACHE, show_spinner=False)
def _lungs(
    lung_key: str, digest: str, _segmenter: LungSegmenter, _image: LoadedImage
) -> viewer.LungView:
    return viewer.lung_view(_segmenter.segment(_image.pixels))


@st.cache_data(max_entries=1024, show_spinner=False)
def _assess(
    model_key: str,
    lung_key: str,
    digest: str,
    _predictor: Predictor,
    _image: LoadedImage,
    _lungs: viewer.LungView | None,
) -> tuple[np.ndarray, GateVerdict]:
    probabilities, verdicts = _predictor.assess(
        [_image], lungs=[_lungs.result] if _lungs is not None else None
    )
    return probabilities[0], verdicts[0]


def read_film(upload: Upload, ctx: PredictContext) -> FilmReading:
    """Decode, gate, segment and score one film (each step cached), then call its findings
    (an out-of-domain film's only if this session chose to score it anyway)."""
    image = _decode(upload.digest, upload.name, upload.data)
    if isinstance(image, str):
        return FilmReading(upload, UNREADABLE, reason=image)
    refusal = _gate(ctx.model_key, upload.digest, ctx.predictor, image)
    if refusal:
        return FilmReading(upload, REFUSED, reason=refusal, image=image)
    segmenter = ctx.lungs.segmenter
    lungs = _lungs(ctx.lungs.key, upload.digest, segmenter, image) if segmenter else None
    row, verdict = _assess(ctx.model_key, ctx.lungs.key, upload.digest, ctx.predictor, image, lungs)
    (prediction,) = ctx.predictor.to_predictions(
        row[None],
        [upload.name],
        ctx.thresholds,
        [verdict],
        score_anyway=outcome_view.score_anyway_choices(ctx.model_key, [upload.digest]),
    )
    if not prediction.probabilities:  # refused by the content test in the forward pass
        return FilmReading(upload, REFUSED, reason=prediction.reason, image=image)
    summary = summarise_findings(prediction, multilabel=ctx.multilabel, flagged=ctx.flagged)
    return FilmReading(
        upload,
        prediction.outcome,
        reason=prediction.reason,
        image=image,
        lungs=lungs,
        prediction=prediction,
        summary=summary,
    )


def pending(upload: Upload) -> FilmReading:
    """A film of the batch not scored yet in this run (the table shows it as such)."""
    return FilmReading(upload, PENDING)


def read_batch(
    batch: Sequence[Upload],
    ctx: PredictContext,
    known: Mapping[int, FilmReading],
    *,
    on_progress: Callable[[list[FilmReading]], None] | None = None,
    every_s: float = 0.3,
) -> list[FilmReading]:
    """Every film of the batch read (``known`` ones, e.g. the film on screen, as given).

    ``on_progress`` receives the readings so far (the others as :func:`pending`) before the first
    film to score and then at most every ``every_s`` seconds, so the page fills its table in while
    the reader reads; cached films cost nothing and do not trigger it.
    """
    readings = [known.get(i) or pending(u) for i, u in enumerate(batch)]
    shown = float("-inf")  # the first film to score shows the table (with its pending rows) at once
    for i, upload in enumerate(batch):
        if readings[i].outcome != PENDING:
            continue
        if on_progress is not None and time.perf_counter() - shown > every_s:
            on_progress(list(readings))
            shown = time.perf_counter()
        readings[i] = read_film(upload, ctx)
    return readings


HEAT_GRID = 256
"""Heatmaps are cached and drawn at most this many cells a side."""


@st.cache_resource(max_entries=FILM_CACHE, show_spinner=False)
def display(digest: str, _image: LoadedImage) -> viewer.FilmDisplay:
    """The viewer's copy of a film (resized once, kept at its bit depth)."""
    return viewer.film_display(_image)


@st.cache_data(max_entries=256, show_spinner=False)
def heatmap(
    model_key: str,
    digest: str,
    class_name: str,
    method: str,
    _predictor: Predictor,
    _image: LoadedImage,
) -> np.ndarray:
    """The film's heatmap for ``class_name`` by ``method``, at most ``HEAT_GRID`` cells a side."""
    heat = explain(_predictor, _image, class_name, method, layer=DEFAULT_LAYER)
    scale = HEAT_GRID / max(heat.shape)
    if scale < 1:
        size = (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale)))
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_AREA)
    return heat


@st.cache_data(max_entries=1024, show_spinner=False)
def in_lungs(
    model_key: str,
    lung_key: str,
    digest: str,
    class_name: str,
    method: str,
    _heat: np.ndarray,
    _mask: np.ndarray,
) -> float:
    """Share of the heatmap's mass inside the lung mask."""
    return heatmap_mass_in_mask(_heat, _mask)


@st.cache_data(max_entries=8, show_spinner=False)
def methods(model_key: str, _predictor: Predictor) -> tuple[dict[str, str], dict[str, float]]:
    """Heatmap methods offered on this machine (method -> why not, "" when offered) and each one's
    estimated time, from one timed forward pass."""
    forward_s = forward_seconds(_predictor, repeats=1)
    return (
        interactive_methods(_predictor, forward_s),
        {method: estimate_seconds(_predictor, method, forward_s) for method in METHODS},
    )


@st.cache_data(max_entries=16, show_spinner=False)
def checkpoint_sha256(model_key: str, path: str) -> str:
    return checkpoint_digest(path)
