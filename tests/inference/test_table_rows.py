"""Predictor results as prediction-table rows: what cxr predict and the Predict page download write."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cxr_core.artifacts.prediction_table import prediction_table_text, read_prediction_table
from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14, LabelSpace
from cxr_core.inference.predictor import FileResult, Predictor
from cxr_core.inference.table_rows import file_row, upload_rows
from tests.inference.test_predictor import write_checkpoint

BINARY = LabelSpace("pneumonia", ("Normal", "Pneumonia"), "multiclass")


@pytest.fixture(scope="module")
def films(nih14_root) -> list:
    return [load_image(p) for p in sorted((nih14_root / "images").glob("*.png"))[:3]]


def _read(classes, rows):
    return read_prediction_table(io.StringIO(prediction_table_text(classes, rows))).frame


def test_page_download_carries_the_calls_gate_and_provenance(tmp_path, films):
    predictor = Predictor.from_checkpoint(
        write_checkpoint(tmp_path / "m.safetensors"), device="cpu"
    )
    predictions = predictor.predict(films, thresholds={"Mass": 0.01})
    rows = upload_rows(
        predictions,
        films,
        multilabel=True,
        model="=nih",
        checkpoint_digest="ab12",
        threshold_set="t1",
    )
    frame = _read(NIH14.classes, rows)
    assert frame["image_id"].tolist() == [im.name for im in films]
    assert set(frame["model"]) == {"=nih"} and set(frame["threshold_set"]) == {"t1"}
    assert set(frame["checkpoint_sha256"]) == {"ab12"} and set(frame["outcome"]) == {"scored"}
    for (_, row), pred in zip(frame.iterrows(), predictions):
        assert row["threshold:Mass"] == 0.01 and "Mass" in row["findings"].split("; ")
        assert row["prob:Mass"] == pytest.approx(pred.probabilities["Mass"], abs=1e-12)
        assert row["warnings"] == " | ".join(pred.warnings)


def test_multiclass_rows_record_argmax_and_no_thresholds(tmp_path, films):
    path = write_checkpoint(tmp_path / "mc.safetensors", label_space=BINARY)
    predictor = Predictor.from_checkpoint(path, device="cpu")
    rows = upload_rows(
        predictor.predict(films[:1]),
        films[:1],
        multilabel=False,
        model="m",
        checkpoint_digest="d",
        threshold_set="t",
    )
    frame = _read(BINARY.classes, rows)
    assert frame["threshold_set"][0] == "argmax" and "threshold:Normal" not in frame.columns
    assert frame["findings"][0] in BINARY.classes


def test_a_file_that_was_not_scored_has_its_reason_and_no_probabilities(films):
    row = file_row(FileResult("/in/=x.png", error="/in/=x.png: file not found."), multilabel=True)
    frame = _read(NIH14.classes, [row])
    assert frame["outcome"][0] == "unreadable" and frame["image_id"][0] == "=x.png"
    assert frame["reason"][0] == frame["error"][0] == "/in/=x.png: file not found."
    assert frame[[f"prob:{c}" for c in NIH14.classes]].isna().all(axis=None)
    assert Path(frame["path"][0]).name == "=x.png"
