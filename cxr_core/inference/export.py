"""Exporting a checkpoint's whole scoring path as one ONNX or TorchScript graph.

The network alone is not the model a user validated: probabilities also depend on the
ensemble's per-member resizing, the test-time augmentation and the activation. The exported
graph therefore takes the tensor :func:`cxr_core.data.preprocessing.eval_tensor` produces
(what the Predictor feeds its model) and returns the probabilities the Predictor returns, by
running :func:`cxr_core.models.tta.class_probabilities` itself. What happens before that
tensor (decoding, resize to the cache size, normalisation) is not a tensor program worth
freezing, so its parameters travel in the file's metadata with the class names and
thresholds, for whoever re-implements it.

The ensemble's antialiased bilinear resize exports to ONNX ``Resize`` with ``antialias=1``
(opset 18), which ONNX Runtime implements; :func:`check_parity` is how a caller confirms the
graph scores like the Predictor on real images, and export fails when it does not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.inference.predictor import Predictor
from cxr_core.models.tta import class_probabilities
from cxr_core.utils.atomic import write_atomically

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("onnx", "torchscript")
METADATA_KEY = (
    "cxr_export"  # ONNX metadata_props key; TorchScript extra file is METADATA_KEY + ".json"
)
ONNX_OPSET = 18  # the first opset whose Resize has the antialias attribute the ensemble needs
INPUT_NAME, OUTPUT_NAME = "input", "probabilities"
PARITY_TOLERANCE = 1e-4


class ScoringGraph(nn.Module):
    """Preprocessed batch (B, C, S, S) -> (B, K) probabilities, as :meth:`Predictor.probabilities_of`."""

    def __init__(
        self,
        model: nn.Module,
        *,
        multilabel: bool,
        tta: str,
        temperature: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.multilabel = multilabel
        self.tta = tta
        self.temperature = (
            temperature  # the card's calibration, applied as the Predictor applies it
        )

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return class_probabilities(
            self.model,
            batch,
            multilabel=self.multilabel,
            tta=self.tta,
            temperature=self.temperature,
        )


def export_metadata(predictor: Predictor) -> dict:
    """What a consumer of the exported file needs besides the graph."""
    card = predictor.card
    return {
        "format_version": 1,
        "classes": list(predictor.classes),
        "task": predictor.label_space.task.value,
        "thresholds": dict(predictor.thresholds),
        "tta": predictor.tta,
        "temperature": predictor.card.temperature() if predictor.card is not None else None,
        "preprocess": predictor.preprocess.to_dict(),
        "input": "float32 (batch, in_chans, input_size, input_size): cxr_core.data.preprocessing.eval_tensor of the "
        "uint8 image resized to cache_size (to_cache_array); gray 0..255 normalised with mean/std"
        + (
            "; BEFORE that, every pixel outside the lungs set to 0 by the lung model preprocess.lung_mask "
            "names (cxr_core.models.lung_mask.LungMasker): that step is not part of this graph"
            if predictor.lung_masker is not None
            else ""
        ),
        "output": "float32 (batch, classes) probabilities: "
        + ("sigmoid" if predictor.label_space.multilabel else "softmax"),
        "architecture": predictor.architecture,
        "provenance": card.provenance if card is not None else "",
    }


def scoring_graph(predictor: Predictor) -> ScoringGraph:
    """The predictor's model wrapped with its activation and test-time augmentation, on the CPU."""
    model = predictor.model.to("cpu").eval()
    temperature = predictor.card.temperature() if predictor.card is not None else None
    return ScoringGraph(
        model,
        multilabel=predictor.label_space.multilabel,
        tta=predictor.tta,
        temperature=temperature,
    ).eval()


def _example(predictor: Predictor, batch: int = 2) -> torch.Tensor:
    cfg = predictor.preprocess
    generator = torch.Generator().manual_seed(0)
    return (
        torch.rand(batch, cfg.in_chans, cfg.input_size, cfg.input_size, generator=generator) * 4 - 2
    )


def _export_torchscript(
    graph: ScoringGraph, example: torch.Tensor, metadata: dict, out: Path
) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(graph, example, check_trace=False)
    extra = {f"{METADATA_KEY}.json": json.dumps(metadata)}
    write_atomically(out, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))


def _export_onnx(graph: ScoringGraph, example: torch.Tensor, metadata: dict, out: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx packages: pip install -e .[export]") from None

    def write(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"batch": {0: torch.export.Dim("batch")}},
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
            )
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(tmp))

    write_atomically(out, write)


def load_exported(path: str | Path) -> tuple[object, dict]:
    """A runner ``batch ndarray -> probabilities ndarray`` for an exported file, and its metadata."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        metadata = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
        return (
            lambda batch: session.run(
                None, {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}
            )[0]
        ), metadata
    extra = {f"{METADATA_KEY}.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    metadata = json.loads(extra[f"{METADATA_KEY}.json"])

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    return run, metadata


def check_parity(path: str | Path, predictor: Predictor, batch: torch.Tensor) -> float:
    """Largest |Δp| between the exported file and the Predictor on a prepared ``batch``."""
    run, _ = load_exported(path)
    expected = predictor.probabilities_of(batch.to(predictor.device))
    return float(np.abs(run(batch.cpu().numpy()) - expected).max())


def export_checkpoint(
    checkpoint: str | Path,
    fmt: str,
    out: str | Path,
    *,
    parity_batch: Sequence[np.ndarray] | None = None,
    tta: str | None = None,
) -> tuple[Path, float | None]:
    """Export ``checkpoint``'s scoring path to ``out`` in ``fmt`` (``onnx`` or ``torchscript``).

    ``parity_batch`` (cache arrays of real images) is scored both ways after export; a
    difference above :data:`PARITY_TOLERANCE` deletes the file and raises, so a graph that
    does not reproduce the Predictor is never left behind. Returns the path and that difference.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(out)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu", tta=tta, warmup=False)
    graph = scoring_graph(predictor)
    metadata = export_metadata(predictor)
    example = _example(predictor)
    out.parent.mkdir(parents=True, exist_ok=True)
    (_export_onnx if fmt == "onnx" else _export_torchscript)(graph, example, metadata, out)
    delta = None
    if parity_batch is not None and len(parity_batch):
        delta = check_parity(out, predictor, predictor.tensor_from_cache_arrays(list(parity_batch)))
        if not delta <= PARITY_TOLERANCE:
            out.unlink(missing_ok=True)
            raise ConfigError(
                f"the exported {fmt} graph differs from the Predictor by {delta:.2e} (> {PARITY_TOLERANCE:g}) on "
                f"{len(parity_batch)} real images; it was not kept"
            )
        logger.info(
            "%s: max |Δp| against the Predictor on %d images = %.2e",
            out.name,
            len(parity_batch),
            delta,
        )
    return out, delta
