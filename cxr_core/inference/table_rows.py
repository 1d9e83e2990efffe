"""Predictions and batch results as rows of the one prediction table.

:mod:`cxr_core.artifacts.prediction_table` owns the columns; this module turns what the
:class:`~cxr_core.inference.predictor.Predictor` returns into its rows, so that ``cxr predict``
and the Predict page's download write the same table. The outcome, ``scored_anyway`` and
``reason`` are the Predictor's (refused files included); a file that could not be read is
``unreadable``, its error the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from cxr_core.artifacts.prediction_table import PredictionRow
from cxr_core.data.imaging import LoadedImage
from cxr_core.inference.findings import summarise_findings
from cxr_core.inference.predictor import FileResult, Prediction


def prediction_row(
    prediction: Prediction,
    *,
    image_id: str,
    multilabel: bool,
    path: str = "",
    patient_id: str = "",
    extra: Mapping[str, Any] | None = None,
) -> PredictionRow:
    """One scored image; thresholds are recorded for multilabel calls only (a multiclass call
    is the most probable class, no threshold is used)."""
    return PredictionRow(
        image_id=image_id,
        path=path,
        patient_id=patient_id,
        outcome=prediction.outcome,
        scored_anyway=prediction.scored_anyway,
        reason=prediction.reason,
        findings=list(prediction.positive),
        probabilities=dict(prediction.probabilities),
        thresholds=dict(prediction.thresholds) if multilabel else {},
        warnings=list(prediction.warnings),
        extra=dict(extra or {}),
    )


def file_row(
    result: FileResult, *, multilabel: bool, extra: Mapping[str, Any] | None = None
) -> PredictionRow:
    """One file of a batch run (``Predictor.iter_predict_files``): scored, or why it was not."""
    image_id = os.path.basename(result.path)
    patient_id = _patient(result.image)
    if result.prediction is not None:
        return prediction_row(
            result.prediction,
            image_id=image_id,
            multilabel=multilabel,
            path=result.path,
            patient_id=patient_id,
            extra=extra,
        )
    return PredictionRow(
        image_id=image_id,
        path=result.path,
        patient_id=patient_id,
        outcome=result.outcome,
        reason=result.error,
        error=result.error,
        extra=dict(extra or {}),
    )


def upload_rows(
    predictions: Sequence[Prediction],
    images: Sequence[LoadedImage],
    *,
    multilabel: bool,
    model: str,
    checkpoint_digest: str,
    threshold_set: str,
    flagged: Mapping[str, str] | None = None,
) -> list[PredictionRow]:
    """The Predict page's uploads, with the model, checkpoint digest and threshold set that
    made the calls, and the borderline calls the page shows. Classes the card distrusts
    (``flagged``) are never among the findings; ``not_trusted`` names those at or above their
    threshold, as the page lists them apart."""
    rows = []
    for prediction, image in zip(predictions, images):
        summary = summarise_findings(prediction, multilabel=multilabel, flagged=flagged)
        extra = {
            "borderline": "; ".join(f.name for f in summary.borderline),
            "model": model,
            "checkpoint_sha256": checkpoint_digest,
            "threshold_set": threshold_set if multilabel else "argmax",
        }
        if flagged:
            extra["not_trusted"] = "; ".join(f.name for f in summary.flagged if f.above_threshold)
        row = prediction_row(
            prediction,
            image_id=image.name,
            multilabel=multilabel,
            patient_id=_patient(image),
            extra=extra,
        )
        row.findings = [c for c in row.findings if c not in (flagged or {})]
        rows.append(row)
    return rows


def _patient(image: LoadedImage | None) -> str:
    value = image.meta.get("patient_id") if image is not None else None
    return str(value) if value not in (None, "") else ""
