"""The one prediction table: round trip, gate outcomes, and the three older formats still read."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core.artifacts.prediction_table import (
    OUTCOMES,
    PredictionRow,
    prediction_table_text,
    read_prediction_table,
    table_columns,
    write_prediction_table,
)
from cxr_core.artifacts.run_dir import load_predictions
from cxr_core.errors import DatasetError
from cxr_core.evaluation.run import write_evaluation
from cxr_core.metrics.report_types import EvaluationReport
from cxr_core.models.checkpoint import read_model_card

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("Atelectasis", "Pleural Effusion")


def _rows() -> list[PredictionRow]:
    return [
        PredictionRow(
            image_id="=1+1_NORMAL_4.jpeg",
            path="/data/=1+1_NORMAL_4.jpeg",
            patient_id="@P1",
            findings=["Pleural Effusion"],
            probabilities={"Atelectasis": 0.1, "Pleural Effusion": 0.9},
            thresholds={"Atelectasis": 0.5, "Pleural Effusion": 0.4},
            warnings=["lateral view", "=cmd|' /C calc'!A0"],
            extra={"lung_fraction": 0.31},
        ),
        PredictionRow(
            image_id="child.png",
            outcome="out_of_domain",
            scored_anyway=True,
            reason="A pediatric film; the model learned from adults.",
            probabilities={"Atelectasis": 0.7, "Pleural Effusion": 0.2},
            thresholds={"Atelectasis": 0.5, "Pleural Effusion": 0.4},
            findings=["Atelectasis"],
        ),
        PredictionRow(
            image_id="ct.dcm",
            outcome="refused",
            reason="Modality CT is not a radiograph.",
            error="ct.dcm: Modality CT is not a radiograph.",
        ),
        PredictionRow(image_id="cut.png", outcome="unreadable", error="cut.png: truncated"),
    ]


def test_round_trip_keeps_every_value_and_outcome(tmp_path):
    path = write_prediction_table(tmp_path / "p.csv", CLASSES, _rows())
    table = read_prediction_table(path)
    frame = table.frame
    assert table.source_format == "cxr" and table.classes == list(CLASSES)
    assert list(frame.columns) == table_columns(
        CLASSES, labels=False, thresholds=True, extra=["lung_fraction"]
    )
    assert frame["image_id"].tolist() == ["=1+1_NORMAL_4.jpeg", "child.png", "ct.dcm", "cut.png"]
    assert frame["outcome"].tolist() == ["scored", "out_of_domain", "refused", "unreadable"]
    assert frame["scored_anyway"].tolist() == [False, True, False, False]
    assert frame["patient_id"][0] == "@P1"
    assert frame["warnings"][0] == "lateral view | =cmd|' /C calc'!A0"
    assert frame["prob:Pleural Effusion"][0] == 0.9 and math.isnan(frame["prob:Atelectasis"][2])
    assert frame["threshold:Pleural Effusion"][1] == 0.4
    assert frame["findings"].tolist() == ["Pleural Effusion", "Atelectasis", "", ""]
    assert table.scored()["image_id"].tolist() == ["=1+1_NORMAL_4.jpeg", "child.png"]
    assert prediction_table_text(CLASSES, _rows()).encode("utf-8") == path.read_bytes()


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="outcome must be one of"):
        PredictionRow(image_id="x", outcome="maybe")
    assert OUTCOMES == ("scored", "out_of_domain", "refused", "unreadable")


def test_old_cxr_predict_files_still_read():
    old = (
        "path,Atelectasis,Pleural Effusion,findings,warnings,lung_fraction,lung_warning,error\r\n"
        "/d/a.png,0.25,0.75,Pleural Effusion,,0.3,,\r\n"
        "/d/=b.png,,,,,,,/d/=b.png: cannot be read\r\n"
    )
    table = read_prediction_table(io.StringIO(old))
    assert table.classes == list(CLASSES) and table.source_format.startswith("cxr predict")
    frame = table.frame
    assert frame["image_id"].tolist() == ["a.png", "=b.png"]
    assert frame["outcome"].tolist() == ["scored", "unreadable"]
    assert frame["prob:Pleural Effusion"][0] == 0.75 and math.isnan(frame["prob:Atelectasis"][1])
    assert frame["lung_fraction"][0] == "0.3"


def test_old_page_downloads_still_read():
    old = (
        "file,model,checkpoint_sha256,threshold_set,positive,borderline,prob:Normal,prob:Pneumonia,"
        "threshold:Normal,threshold:Pneumonia\r\n"
        "'=x.png,pneumonia,abc,argmax,Pneumonia,,0.2,0.8,,\r\n"
    )
    table = read_prediction_table(io.StringIO(old))
    assert table.classes == ["Normal", "Pneumonia"]
    row = table.frame.iloc[0]
    assert row["image_id"] == "=x.png" and row["findings"] == "Pneumonia"
    assert row["outcome"] == "scored" and row["prob:Pneumonia"] == 0.8
    assert row["model"] == "pneumonia" and math.isnan(row["threshold:Normal"])


@pytest.mark.parametrize("name", ["nih14", "pneumonia", "pneumonia_type"])
def test_shipped_evaluation_files_of_the_old_format_still_read(name):
    path = REPO / "checkpoints" / name / "eval" / "val" / "predictions.csv"
    raw = pd.read_csv(path)
    frame, classes = load_predictions(path)
    card = read_model_card(path.parents[2] / "model.safetensors")
    assert classes == list(card.classes) and len(frame) == len(raw)
    for c in classes:
        np.testing.assert_array_equal(frame[f"prob:{c}"].to_numpy(), raw[f"prob:{c}"].to_numpy())
    assert set(frame["outcome"]) == {"scored"}


def test_evaluation_writes_the_table_and_reads_it_back(tmp_path):
    frame = pd.DataFrame(
        {
            "image_id": ["=a.png", "b.png", "c.png"],
            "patient_id": ["+p1", "p2", "p2"],
            "path": ["/x/=a.png", "/x/b.png", "/x/c.png"],
            "label:Atelectasis": [1.0, 0.0, np.nan],
            "label:Pleural Effusion": [0.0, 1.0, 1.0],
            "prob:Atelectasis": [0.123456789012345, 0.5, 1e-9],
            "prob:Pleural Effusion": [0.9, 0.1, 0.0],
        }
    )
    write_evaluation(tmp_path, frame, EvaluationReport("multilabel", list(CLASSES), 3, {}))
    back, classes = load_predictions(tmp_path / "predictions.csv")
    assert classes == list(CLASSES)
    pd.testing.assert_frame_equal(back[frame.columns], frame, check_dtype=False)


def test_non_numeric_probabilities_name_the_row():
    text = "image_id,outcome,prob:A\r\nx.png,scored,0.5\r\ny.png,scored,high\r\n"
    with pytest.raises(
        DatasetError, match=r"'prob:A' holds text that is not a number in row\(s\) 3"
    ):
        read_prediction_table(io.StringIO(text))
    with pytest.raises(DatasetError, match="not a cxr prediction table"):
        read_prediction_table(io.StringIO("a,b\r\n1,2\r\n"))
