"""Prediction from one checkpoint, shared safely by every dashboard session and the CLI.

One :class:`Predictor` is built per checkpoint and shared across threads (Streamlit's
``st.cache_resource``), so:

- ``predict`` runs under ``torch.inference_mode()`` on a model in ``eval()`` mode and keeps
  no per-call state on the object, so any number of threads may call it at once.
- Explanations need forward hooks and gradients. Hooks registered on a module fire for
  *every* forward pass through it, whichever thread runs it, and ``backward`` writes
  gradient state; done on the shared model, one session's Grad-CAM would capture another
  session's activations. Explanations therefore run on a separate copy of the model, one at
  a time, behind a lock (:meth:`Predictor.explanation_model`). Predictions never wait for it.

Images take exactly the path ``cxr evaluate`` takes (``to_cache_array`` at the cache size,
for a lung-masked model the card's lung masker on that array, then ``eval_tensor``), so a
probability shown in the dashboard equals the one in the evaluation report for the same image.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.data.imaging import LoadedImage, load_image
from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, to_cache_array
from cxr_core.errors import (
    CheckpointError,
    ConfigError,
    CXRError,
    ImageLoadError,
    UnsuitableImageError,
)
from cxr_core.inference.domain import LayerTap, feature_layers
from cxr_core.inference.gate import InputGate
from cxr_core.inference.lungs import LungResult, LungSegmenter
from cxr_core.inference.outcome import (
    REFUSED,
    SCORED,
    UNREADABLE,
    GateVerdict,
    calls_allowed,
)
from cxr_core.metrics import DEFAULT_THRESHOLD
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.models.lung_mask import LungMasker
from cxr_core.models.tta import check_tta, class_probabilities
from cxr_core.utils.device import resolve_device
from cxr_core.utils.tasks import Task

ImageInput = LoadedImage | np.ndarray | str | os.PathLike[str]


@dataclass(frozen=True)
class Prediction:
    """The input gate's outcome for one image, its probabilities and the findings called positive.

    Multilabel: a class is positive when its probability reaches its threshold.
    Multiclass: the single most probable class (thresholds are recorded but not used).
    ``outcome`` (:mod:`cxr_core.inference.outcome`): ``refused`` carries no probabilities;
    ``out_of_domain`` carries them but calls nothing positive unless ``scored_anyway``.
    ``reason`` says why an image was not simply scored; ``warnings`` lists every check that fired.
    """

    probabilities: dict[str, float]
    positive: list[str]
    thresholds: dict[str, float]
    name: str = ""
    warnings: list[str] = field(default_factory=list)
    outcome: str = SCORED
    reason: str = ""
    scored_anyway: bool = False

    @classmethod
    def refused(cls, name: str, reason: str, thresholds: dict[str, float]) -> Prediction:
        """An image the gate refused: no probabilities, no calls, the reason."""
        return cls({}, [], dict(thresholds), name, [reason], REFUSED, reason)


@dataclass
class FileResult:
    """One file of a batch run: its prediction (refused ones included), or why it could not be read."""

    path: str
    prediction: Prediction | None = None
    error: str = ""  # why the file could not be read (outcome unreadable)
    image: LoadedImage | None = field(default=None, repr=False)
    lungs: LungResult | None = field(
        default=None, repr=False
    )  # the gate's lung mask, when it has a lung model

    @property
    def outcome(self) -> str:
        return self.prediction.outcome if self.prediction is not None else UNREADABLE

    @property
    def reason(self) -> str:
        return self.prediction.reason if self.prediction is not None else self.error

    @property
    def warnings(self) -> list[str]:
        """The input gate's warnings for this file (none when it could not be read)."""
        return self.prediction.warnings if self.prediction is not None else []


def as_image(image: ImageInput) -> LoadedImage | np.ndarray:
    """A path read with ``load_image``; anything else as given (checked by :func:`image_pixels`)."""
    return load_image(image) if isinstance(image, (str, os.PathLike)) else image


def image_list(images: Sequence[ImageInput]) -> list[LoadedImage | np.ndarray]:
    """``images`` with paths read; a single image or ``None`` where a list belongs is refused
    (a path string would otherwise be taken as a list of one-letter file names)."""
    single = isinstance(images, (str, os.PathLike, LoadedImage, bytes)) or (
        isinstance(images, np.ndarray) and images.ndim < 3
    )
    if images is None or single:
        raise ImageLoadError(
            f"expected a list of images (paths, LoadedImage or arrays), got one {type(images).__name__}; "
            "wrap a single image in a list: predict([image])."
        )
    return [as_image(im) for im in images]


def image_pixels(image: ImageInput, position: int = 0) -> tuple[np.ndarray, str]:
    """Gray float32 (H, W) pixels and a display name; uint8 arrays are scaled to [0, 1].

    A path (``str`` or ``os.PathLike``) is read with ``load_image``. Arrays must be real-valued
    (bool, integer or float), finite and 2-D: a NaN or infinite image would otherwise flow into
    the model and come out as confident findings. Anything else raises ``ImageLoadError``.
    """
    image = as_image(image)
    if isinstance(image, LoadedImage):
        pixels, name = image.pixels, image.name
    elif isinstance(image, np.ndarray):
        pixels, name = image, f"image #{position + 1}"
    else:
        raise ImageLoadError(
            f"image #{position + 1}: expected a file path, a LoadedImage or a numpy array, got "
            f"{type(image).__name__}; read files with cxr_core.data.imaging.load_image."
        )
    if pixels.dtype.kind not in "biuf":
        raise ImageLoadError(
            f"{name}: the array holds {pixels.dtype} values; an image must hold numbers "
            "(uint8 0-255, or floats in [0, 1])."
        )
    if pixels.ndim != 2 or min(pixels.shape) < 1:
        raise ImageLoadError(
            f"{name}: expected one grayscale image of shape (height, width), got an array of shape "
            f"{pixels.shape}; read files with cxr_core.data.imaging.load_image."
        )
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0, name
    with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused just below
        pixels = pixels.astype(np.float32, copy=False)
    if not np.isfinite(pixels).all():
        raise ImageLoadError(
            f"{name}: the array contains NaN or infinite values (or values too large for float32); "
            "an image must hold finite numbers. Check how the array was made."
        )
    return pixels, name


class Predictor:
    """A checked model plus its label space, preprocessing and thresholds.

    Build it with :meth:`from_checkpoint`; the constructor is for callers that already hold a
    model (tests, benchmarks) and must supply the layer Grad-CAM reads.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        label_space: LabelSpace,
        preprocess: PreprocessConfig,
        target_layer: Callable[[nn.Module], nn.Module | list[nn.Module]],
        thresholds: dict[str, float] | None = None,
        architecture: str = "",
        card: ModelCard | None = None,
        device: str | torch.device = "auto",
        tta: str | None = None,
        gate: InputGate | None = None,
        feature_layers: Sequence[nn.Module] = (),
        lung_masker: LungMasker | None = None,
    ) -> None:
        """``gate`` with fitted detectors needs ``feature_layers``, the layers of ``model`` whose
        outputs they measure (:func:`cxr_core.inference.domain.feature_layers`); lung-masked
        ``preprocess`` needs the ``lung_masker`` of its lung model."""
        if (preprocess.lung_mask is not None) != (lung_masker is not None):
            raise ConfigError(
                "the preprocessing asks for lung masking but no lung masker was given"
                if lung_masker is None
                else "a lung masker was given for a model that sees whole images"
            )
        self.lung_masker = lung_masker
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.gate = gate if gate is not None else InputGate(card)
        if self.gate.measures_features and not feature_layers:
            raise ConfigError(
                "an input gate with fitted detectors needs the model's feature layers"
            )
        self._tap = LayerTap(feature_layers) if self.gate.measures_features else None
        self.label_space = label_space
        self.preprocess = preprocess
        self.architecture = architecture
        self.card = card
        self.tta = check_tta(tta if tta is not None else (card.tta if card is not None else "none"))
        self._target_layer = target_layer
        self.thresholds = self._checked_thresholds(thresholds or {}, origin="checkpoint")
        self._explain_lock = threading.Lock()
        self._explain_model: nn.Module | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        *,
        device: str | torch.device = "auto",
        expect_architecture: str | None = None,
        expect_classes: Sequence[str] | None = None,
        tta: str | None = None,
        warmup: bool = True,
        lungs: LungSegmenter | None = None,
    ) -> Predictor:
        """Load, check and warm up a checkpoint; refuse anything that does not fit.

        ``tta=None`` scores images the way the model card's validation numbers were computed.
        ``lungs`` gives the input gate a lung model, whose check then joins each image's warnings.

        Raises ``CheckpointError`` naming the file and the mismatch (wrong architecture or
        classes, unregistered architecture, missing preprocessing, corrupt file).
        """
        ckpt = load_checkpoint(
            path, expect_architecture=expect_architecture, expect_classes=expect_classes
        )
        card = ckpt.card
        if card.label_space.get("task") == Task.SEGMENTATION.value:
            raise CheckpointError(
                f"{path} is a segmentation model (it draws masks, it does not classify); use it as the lung model "
                "(cxr predict --lungs, cxr_core.inference.lungs.LungSegmenter), not as a classifier"
            )
        model = ckpt.build_model()
        predictor = cls(
            model,
            label_space=card.get_label_space(),
            preprocess=card.get_preprocess(),
            target_layer=ckpt.target_layers,
            thresholds=dict(card.thresholds),
            architecture=card.architecture,
            card=card,
            device=device,
            tta=tta,
            gate=InputGate.of_checkpoint(card, ckpt.gate, lungs),
            feature_layers=[module for _, module in feature_layers(card, model)],
            lung_masker=lung_masker_for(card.get_preprocess(), device),
        )
        if warmup:
            predictor.warmup()
        return predictor

    def warmup(self) -> None:
        """One dummy forward so the first real request does not pay for lazy initialisation."""
        size = self.preprocess.input_size
        with torch.inference_mode():
            self.model(torch.zeros(1, self.preprocess.in_chans, size, size, device=self.device))

    # ------------------------------------------------------------------ properties

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_space.classes

    def target_layers(self, model: nn.Module) -> list[nn.Module]:
        """The layers Grad-CAM reads (one per ensemble member), found in ``model``, the
        predictor's model or its explanation copy."""
        layers = self._target_layer(model)
        return list(layers) if isinstance(layers, (list, tuple)) else [layers]

    # ------------------------------------------------------------------ thresholds

    def _checked_thresholds(self, thresholds: dict[str, float], *, origin: str) -> dict[str, float]:
        merged = {cls: DEFAULT_THRESHOLD for cls in self.classes}
        for name, value in thresholds.items():
            cls = self.classes[self.label_space.index(name)]
            value = float(value)
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ConfigError(
                    f"{origin} threshold for '{cls}' is {value}; thresholds must lie between 0 and 1."
                )
            merged[cls] = value
        return merged

    def resolve_thresholds(self, thresholds: dict[str, float] | None = None) -> dict[str, float]:
        """The checkpoint's thresholds overridden per class by ``thresholds`` (unknown class → UnknownClassError)."""
        if not thresholds:
            return dict(self.thresholds)
        return self._checked_thresholds({**self.thresholds, **thresholds}, origin="given")

    # ------------------------------------------------------------------ tensors

    def cache_array(self, image: ImageInput, position: int = 0) -> np.ndarray:
        """The uint8 array the image cache would hold for this image (the decode-side half of
        preprocessing), lung-masked when the model was trained on lung-masked images.

        Raises ``UnsuitableImageError`` for an image the input gate refuses before the model runs
        (blank, too small, another modality or body part).
        """
        image = as_image(image)
        pixels, name = image_pixels(image, position)
        self.gate.refuse_early(pixels, name, image.meta if isinstance(image, LoadedImage) else None)
        array = to_cache_array(pixels, self.preprocess.cache_size)
        return self.lung_masker(array[None])[0] if self.lung_masker is not None else array

    def segment_lungs(self, image: ImageInput, position: int = 0) -> LungResult | None:
        """The input gate's lung mask and check of one image (None when the gate has no lung model)."""
        if self.gate.lungs is None:
            return None
        return self.gate.segment_lungs(image_pixels(image, position)[0])

    def tensor_from_cache_arrays(self, arrays: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, C, S, S) network input from cache arrays, on the predictor's device."""
        batch = eval_tensor(np.stack(arrays), self.preprocess)
        return batch.to(self.device)

    def prepare(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """(B, C, S, S) network input for images, exactly as evaluation would build it."""
        return self.tensor_from_cache_arrays(
            [self.cache_array(im, i) for i, im in enumerate(images)]
        )

    def probabilities_of(self, batch: torch.Tensor) -> np.ndarray:
        """(B, C) probabilities for a prepared batch; sigmoid (multilabel) or softmax (multiclass),
        calibrated with the card's temperature as evaluation calibrates ``predictions.csv``."""
        return self._score(batch)[0]

    def _score(
        self, batch: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Probabilities and the gate's (chest, domain) scores, from one forward pass."""

        def forward() -> torch.Tensor:
            with torch.inference_mode():
                return class_probabilities(
                    self.model,
                    batch,
                    multilabel=self.label_space.multilabel,
                    tta=self.tta,
                    temperature=self.card.temperature() if self.card is not None else None,
                )

        if self._tap is None:
            return forward().cpu().numpy(), None, None
        probs, features = self._tap.run(forward)
        return probs.cpu().numpy(), *self.gate.feature_scores(features)

    def _verdicts(
        self,
        images: Sequence[ImageInput],
        lungs: Sequence[LungResult | None],
        chest: np.ndarray | None,
        domain: np.ndarray | None,
    ) -> list[GateVerdict]:
        return [
            self.gate.verdict(
                image.meta if isinstance(image, LoadedImage) else None,
                lungs=lung,
                chest_score=None if chest is None else float(chest[i]),
                domain_score=None if domain is None else float(domain[i]),
            )
            for i, (image, lung) in enumerate(zip(images, lungs))
        ]

    def assess(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int = 16,
        lungs: Sequence[LungResult | None] | None = None,
    ) -> tuple[np.ndarray, list[GateVerdict]]:
        """(N, C) probabilities and each image's gate verdict (outcome, reason, warnings).

        Rows of refused images are NaN: they have no probabilities. ``lungs``: each image's
        :meth:`segment_lungs` result when the caller already has it (the dashboard caches it
        per upload); otherwise the gate segments the images it lets through itself.
        """
        _check_batch_size(batch_size)
        images = image_list(images)
        if lungs is not None and len(lungs) != len(images):
            raise ValueError(
                f"assess needs one lung result per image: {len(images)} images, {len(lungs)} results"
            )
        probs = np.full((len(images), len(self.classes)), np.nan, dtype=np.float32)
        verdicts: list[GateVerdict | None] = [None] * len(images)
        kept: list[tuple[int, np.ndarray]] = []
        for i, image in enumerate(images):
            try:
                kept.append((i, self.cache_array(image, i)))
            except UnsuitableImageError as exc:
                verdicts[i] = GateVerdict(REFUSED, str(exc), (str(exc),))
        for start in range(0, len(kept), batch_size):
            chunk = kept[start : start + batch_size]
            index = [i for i, _ in chunk]
            scored, chest, domain = self._score(
                self.tensor_from_cache_arrays([a for _, a in chunk])
            )
            probs[index] = scored
            found = [
                lungs[i] if lungs is not None else self.segment_lungs(images[i], i) for i in index
            ]
            chunk_verdicts = self._verdicts([images[i] for i in index], found, chest, domain)
            for i, verdict in zip(index, chunk_verdicts):
                verdicts[i] = verdict
        return probs, verdicts

    # ------------------------------------------------------------------ predictions

    def predict_probabilities(
        self, images: Sequence[ImageInput], *, batch_size: int = 16
    ) -> np.ndarray:
        """(N, C) float32 probabilities in the order of ``images`` and ``classes`` (NaN rows:
        images the gate refused)."""
        return self.assess(images, batch_size=batch_size)[0]

    def to_predictions(
        self,
        probabilities: np.ndarray,
        names: Sequence[str],
        thresholds: dict[str, float],
        verdicts: Sequence[GateVerdict] | None = None,
        *,
        score_anyway: bool | Sequence[bool] = False,
    ) -> list[Prediction]:
        """Wrap (N, C) probabilities and the gate's verdicts into :class:`Prediction` objects.

        ``score_anyway`` (one flag, or one per image): call the findings of out-of-domain images
        too; the choice is recorded in each such prediction (``scored_anyway``).
        """
        verdicts = verdicts if verdicts is not None else [GateVerdict(SCORED)] * len(names)
        anyway = (
            [bool(score_anyway)] * len(names)
            if isinstance(score_anyway, bool)
            else [bool(a) for a in score_anyway]
        )
        if not len(probabilities) == len(names) == len(verdicts) == len(anyway):
            raise ValueError(
                "to_predictions needs one probability row, name, verdict and choice per image"
            )
        return [
            self._prediction(row, name, thresholds, verdict, chosen)
            for row, name, verdict, chosen in zip(probabilities, names, verdicts, anyway)
        ]

    def _prediction(
        self,
        row: np.ndarray,
        name: str,
        thresholds: dict[str, float],
        verdict: GateVerdict,
        anyway: bool,
    ) -> Prediction:
        if not verdict.has_probabilities:
            return Prediction.refused(name, verdict.reason, thresholds)
        probs = {cls: float(p) for cls, p in zip(self.classes, row)}
        anyway = anyway and verdict.outcome != SCORED
        positive: list[str] = []
        if calls_allowed(verdict.outcome, anyway):
            if self.label_space.multilabel:
                positive = [cls for cls in self.classes if probs[cls] >= thresholds[cls]]
            else:
                positive = [self.classes[int(np.argmax(row))]]
        return Prediction(
            probs,
            positive,
            dict(thresholds),
            name,
            list(verdict.warnings),
            verdict.outcome,
            verdict.reason,
            anyway,
        )

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        thresholds: dict[str, float] | None = None,
        batch_size: int = 16,
        score_anyway: bool = False,
    ) -> list[Prediction]:
        """One :class:`Prediction` per image, refused ones included (thread-safe).

        ``score_anyway``: also call the findings of out-of-domain images (recorded per image).
        """
        used = self.resolve_thresholds(thresholds)
        images = image_list(images)
        probs, verdicts = self.assess(images, batch_size=batch_size)
        names = [
            im.name if isinstance(im, LoadedImage) else f"image #{i + 1}"
            for i, im in enumerate(images)
        ]
        return self.to_predictions(probs, names, used, verdicts, score_anyway=score_anyway)

    def iter_predict_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        thresholds: dict[str, float] | None = None,
        batch_size: int = 16,
        workers: int = 2,
        keep_images: bool = False,
        score_anyway: bool = False,
    ) -> Iterator[FileResult]:
        """Predict files in order, decoding upcoming files in threads while the model runs.

        Every file yields a result: a file that cannot be read has ``error`` set (outcome
        ``unreadable``), one the gate refuses a refused prediction; the run goes on.
        ``keep_images`` attaches the decoded image (for heatmaps) to each result. With a lung
        model in the gate, each result carries its lung mask (``lungs``), segmented in the
        decoding threads. ``score_anyway`` calls the findings of out-of-domain files too.
        """
        _check_batch_size(batch_size)
        used = self.resolve_thresholds(thresholds)
        paths = [os.fspath(p) for p in paths]
        # Decoding runs up to two batches ahead of the model, bounding memory on huge folders.
        ahead = 2 * batch_size
        with ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="cxr-decode"
        ) as pool:
            pending: list[Future] = [
                pool.submit(self._decode, p, keep_images, used) for p in paths[:ahead]
            ]
            next_index = len(pending)
            done = 0
            while done < len(paths):
                batch_futures = pending[:batch_size]
                pending = pending[batch_size:]
                while next_index < len(paths) and len(pending) < ahead:
                    pending.append(pool.submit(self._decode, paths[next_index], keep_images, used))
                    next_index += 1
                decoded = [f.result() for f in batch_futures]
                self._score_decoded([d for d in decoded if d[1] is not None], used, score_anyway)
                for result, _, _ in decoded:
                    yield result
                done += len(batch_futures)

    def _score_decoded(
        self,
        decoded: Sequence[tuple[FileResult, np.ndarray, dict]],
        thresholds: dict[str, float],
        score_anyway: bool,
    ) -> None:
        """Score one batch of decoded files and attach each one's prediction to its result."""
        if not decoded:
            return
        probs, chest, domain = self._score(self.tensor_from_cache_arrays([d[1] for d in decoded]))
        for i, (result, _, meta) in enumerate(decoded):
            verdict = self.gate.verdict(
                meta,
                lungs=result.lungs,
                chest_score=None if chest is None else float(chest[i]),
                domain_score=None if domain is None else float(domain[i]),
            )
            result.prediction = self._prediction(
                probs[i], result.path, thresholds, verdict, score_anyway
            )

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        thresholds: dict[str, float] | None = None,
        batch_size: int = 16,
        workers: int = 2,
        score_anyway: bool = False,
    ) -> list[FileResult]:
        """All of :meth:`iter_predict_files` as a list (images not kept)."""
        return list(
            self.iter_predict_files(
                paths,
                thresholds=thresholds,
                batch_size=batch_size,
                workers=workers,
                score_anyway=score_anyway,
            )
        )

    def _decode(
        self, path: str, keep_image: bool, thresholds: dict[str, float]
    ) -> tuple[FileResult, np.ndarray | None, dict]:
        """(result, cache array, file metadata); no array when the file is unreadable or refused."""
        try:
            image = load_image(path)
            array = self.cache_array(image)
        except UnsuitableImageError as exc:
            return FileResult(path, Prediction.refused(path, str(exc), thresholds)), None, {}
        except CXRError as exc:
            return FileResult(path, error=str(exc)), None, {}
        except (OSError, ValueError) as exc:
            return FileResult(path, error=f"{path}: could not be read ({exc})."), None, {}
        lungs = self.segment_lungs(image)
        return (
            FileResult(path, image=image if keep_image else None, lungs=lungs),
            array,
            image.meta,
        )

    # ------------------------------------------------------------------ explanations

    @contextmanager
    def explanation_model(self) -> Iterator[nn.Module]:
        """Exclusive use of the explanation copy of the model (see the module docstring for why).

        The copy's parameters do not require gradients: Grad-CAM needs gradients with respect
        to one layer's activations only (see ``cxr_core.inference.explain._graph_starts_at``).
        """
        with self._explain_lock:
            if self._explain_model is None:
                replica = copy.deepcopy(self.model).eval()
                for param in replica.parameters():
                    param.requires_grad_(False)
                self._explain_model = replica
            yield self._explain_model


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, not {batch_size}")
