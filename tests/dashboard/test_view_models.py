"""Presentation-only shaping of the dashboard: findings text, window/level, table heights, titles, dates."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from cxr_core.inference.findings import summarise_findings
from cxr_core.inference.predictor import Prediction
from cxr_core.metrics import EvaluationReport
from dashboard import reading, tables, viewer
from tests.dashboard.viewer_data import read_payload


def _multilabel(probs, thresholds, name="a.png"):
    return summarise_findings(
        Prediction(probs, [c for c in probs if probs[c] >= thresholds[c]], thresholds, name),
        multilabel=True,
    )


def _reading(summary, warnings=(), outcome="scored", reason=""):
    from dashboard.predict_batch import FilmReading, Upload

    prediction = (
        Prediction({}, [], {}, summary.name, list(warnings)) if summary is not None else None
    )
    upload = Upload(summary.name if summary is not None else "bad.png", "0" * 40, b"")
    return FilmReading(upload, outcome, reason, prediction=prediction, summary=summary)


def test_results_table_has_a_numeric_score_the_calls_and_the_gates_warnings():
    thresholds = {"Mass": 0.154, "Effusion": 0.5, "Nodule": 0.1, "Edema": 0.2, "Hernia": 0.05}
    probs = {"Mass": 0.154, "Effusion": 0.9, "Nodule": 0.01, "Edema": 0.3, "Hernia": 0.5}
    s1 = summarise_findings(
        Prediction(probs, [c for c in probs if probs[c] >= thresholds[c]], thresholds, "a.png"),
        multilabel=True,
        flagged={"Hernia": "low count (7 validation positives, 305 negatives)"},
    )
    s2 = _multilabel(dict.fromkeys(thresholds, 0.01), thresholds, "b.png")
    table = reading.results_table(
        [
            _reading(s1),
            _reading(s2, ["the image looks unlike the training images"]),
            _reading(None, outcome="unreadable", reason="bad.png: not an image"),
            _reading(None, outcome="pending"),
        ]
    )
    assert list(table.columns) == reading.RESULT_COLUMNS
    assert table["abnormality"].dtype == "float64"  # sortable as a number
    assert table["abnormality"].tolist()[:2] == [0.9, 0.01] and np.isnan(
        table.loc[2, "abnormality"]
    )
    assert table.loc[0, "called"] == "Effusion 0.90; Edema 0.30; ≈Mass 0.15"  # Hernia not called
    assert table.loc[0, "not trusted"] == "Hernia 0.50" and table.loc[0, "borderline"] == 1
    assert table.loc[1, "called"] == "none called"
    assert table["warnings"].tolist()[1:3] == [
        "the image looks unlike the training images",
        "not an image",  # the row names the file; the reading view shows the whole text
    ]
    long = "DICOM Modality is CT, not a radiograph (CR/DX): this model only reads chest X-rays."
    assert reading.short_warning(long) == "DICOM Modality is CT, not a radiograph (CR/DX)"
    assert reading.short_warning("No colon here. Second sentence.") == "No colon here"
    assert len(reading.short_warning("x" * 200)) == reading.SHORT_WARNING
    assert table["outcome"].tolist() == ["scored", "scored", "unreadable", "scoring…"]


def test_headline_names_only_called_findings_and_distrusted_ones_apart():
    s = _multilabel({"Mass": 0.154, "Nodule": 0.19}, {"Mass": 0.154, "Nodule": 0.2})
    text = reading.headline(s)
    assert ":red[**Mass**] (0.15, borderline)" in text
    assert "Borderline, not called:] Nodule (0.19 vs 0.20)" in text
    assert f"Abnormality score **0.19** ({reading.SCORE_SOURCE})" in text  # Nodule: not named
    effusion = summarise_findings(
        Prediction(
            {"Effusion": 0.4, "Hernia": 0.09, "Mass": 0.3},
            ["Hernia", "Mass"],
            {"Effusion": 0.5, "Hernia": 0.05, "Mass": 0.25},
            "e.png",
        ),
        multilabel=True,
        flagged={"Hernia": "low count (7 validation positives, 305 negatives)"},
    )
    text = reading.headline(effusion)
    assert "Effusion" not in text and "Hernia" not in text  # uncalled and distrusted: unnamed
    assert ":red[**Mass**]" in text and ":red[**Hernia" not in text
    apart = reading.not_trusted_lines(effusion)
    assert "Hernia 0.090, at or above its threshold 0.050 · low count (7 validation" in apart
    assert ":red[" not in apart
    called = _multilabel({"Mass": 0.8, "Nodule": 0.1}, {"Mass": 0.5, "Nodule": 0.2})
    assert "Abnormality score **0.80** (Mass, called)" in reading.headline(called)
    normal = summarise_findings(
        Prediction({"Normal": 0.99, "Pneumonia": 0.01}, ["Normal"], {}, "n"), multilabel=False
    )
    assert ":green[Normal]" in reading.headline(normal) and ":red[" not in reading.headline(normal)
    tie = summarise_findings(
        Prediction({"Normal": 0.0, "Bacterial": 0.55, "Viral": 0.45}, ["Bacterial"], {}, "t"),
        multilabel=False,
    )
    assert "runner-up: Viral (0.45)" in reading.headline(tie) and "Near tie" in reading.headline(
        tie
    )
    assert reading.called_text(tie) == "Bacterial 0.55 · near tie"


def test_heatmap_methods_carry_their_estimate_and_left_out_ones_say_why():
    estimates = {"gradcam": 0.04, "scorecam": 6.4}
    assert reading.method_label("scorecam", estimates) == "scorecam (≈ 6.4 s)"
    assert reading.method_label("gradcam", estimates) == "gradcam (< 0.1 s)"
    assert reading.method_label("layercam", estimates) == "layercam"
    assert reading.seconds_text(97.4) == "≈ 97 s"
    note = reading.left_out_note({"gradcam": "", "scorecam": "estimated 97 s, above 10 s"})
    assert note == "Left out: scorecam, estimated 97 s, above 10 s."
    assert reading.left_out_note({"gradcam": "", "scorecam": ""}) == ""


def test_dicom_fields_are_de_identified_unless_switched_on():
    meta = {
        "format": "DICOM",
        "view_position": "PA",
        "patient_age": "063Y",
        "patient_sex": "F",
        "modality": "DX",
        "study_date": "20240131",
        "patient_id": "P0042",
    }
    shown = dict(reading.dicom_fields(meta))
    assert shown == {
        "View": "PA",
        "Age": "063Y",
        "Sex": "F",
        "Modality": "DX",
        "Study date": "31 Jan 2024",
    }
    assert dict(reading.dicom_fields(meta, show_identifiers=True))["Patient ID"] == "P0042"
    assert reading.dicom_fields({"format": "PNG", "patient_id": "x"}) == []


def test_window_level_maps_the_window_onto_black_to_white():
    pixels = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, -1)
    shown = viewer.apply_window(pixels, level=0.5, width=0.5)
    assert shown[0, 0] == 0 and shown[0, 25] == 0 and shown[0, 50] == 128 and shown[0, 75] == 255
    assert shown[0, 100] == 255
    np.testing.assert_array_equal(
        viewer.apply_window(pixels, 0.5, 1.0), np.round(pixels * 255).astype(np.uint8)
    )
    level, width = viewer.auto_window(pixels)
    assert level == pytest.approx(0.5) and width == pytest.approx(0.98)


def test_view_is_full_resolution_up_to_the_cap():
    small = np.zeros((256, 300), np.uint8)
    assert viewer.resize_for_view(small) is small
    big = np.zeros((3000, 2500), np.uint8)
    assert viewer.resize_for_view(big).shape == (2048, 1707)
    assert viewer.png_data_uri(small).startswith("data:image/png;base64,")


def test_a_12_bit_film_reaches_the_viewer_with_every_stored_level():
    from cxr_core.data.imaging import LoadedImage

    stored = np.arange(4096, dtype=np.float32).reshape(64, 64)  # every 12-bit value once
    film = LoadedImage(
        stored / 4095, "a.dcm", {"format": "DICOM", "bit_depth": 12, "voi": "divided by 4095"}
    )
    display = viewer.film_display(film)
    assert display.max_value == 4095 and display.unit == "stored values"
    header, pixels, heat = read_payload(viewer.viewer_payload("f1", display))
    assert header["bits"] == 16 and pixels.dtype == np.dtype("<u2") and heat is None
    back = np.rint(pixels.astype(np.float64) * header["max_value"] / 65535)
    np.testing.assert_array_equal(back, stored)  # the browser recovers each stored value
    level, width = header["window"]  # the automatic window, in stored values
    assert level == pytest.approx(2047.5, abs=1) and width == pytest.approx(0.98 * 4095, rel=0.01)
    assert dict((name, (lv, wd)) for name, lv, wd in header["presets"])["Full range"] == (
        pytest.approx(4095 / 2),
        pytest.approx(4095),
    )
    eight = viewer.film_display(
        LoadedImage(
            stored[:16, :16] % 256 / 255,
            "b.png",
            {"format": "PNG", "bit_depth": 8, "scale": "divided by 255"},
        )
    )
    assert eight.pixels.dtype == np.uint8 and eight.max_value == 255
    np.testing.assert_array_equal(eight.pixels, stored[:16, :16] % 256)


def test_a_big_film_is_sent_at_the_view_size_with_its_heatmap_and_lungs():
    from cxr_core.data.imaging import LoadedImage

    film = LoadedImage(np.full((2500, 2048), 0.4, np.float32), "big.png", {"bit_depth": 8})
    display = viewer.film_display(film)
    assert display.pixels.shape == (2048, 1678) and display.source == (2048, 2500)
    heat = np.linspace(0, 1, 20 * 16, dtype=np.float32).reshape(20, 16)
    lungs = [np.array([[1.0, 2.0], [30.0, 2.0], [30.0, 40.0], [1.0, 2.0]])]
    payload = viewer.viewer_payload(
        "f2",
        display,
        heat=heat,
        heat_style={"mode": "heat", "opacity": 0.7},
        lungs=lungs,
        titles=("Original", "gradcam · Mass · heat"),
    )
    header, pixels, grid = read_payload(payload)
    assert (header["width"], header["height"], header["source"]) == (1678, 2048, [2048, 2500])
    np.testing.assert_array_equal(grid, np.rint(heat * 255).astype(np.uint8))
    assert header["heat"]["mode"] == "heat" and header["heat"]["opacity"] == 0.7
    assert header["heat"]["level"] == 0.5 and header["heat"]["floor"] == viewer.HEAT_FLOOR
    assert header["lungs"] == [[1.0, 2.0, 30.0, 2.0, 30.0, 40.0, 1.0, 2.0]]
    assert header["titles"] == ["Original", "gradcam · Mass · heat"]
    assert (pixels == 102).all()


def test_table_height_fits_every_row():
    assert tables.table_height(14) == tables.HEADER_PX + 14 * tables.ROW_PX + 3
    assert tables.table_height(0) == tables.table_height(1)


def test_titles_and_key_values():
    frame = pd.DataFrame({"class": ["Mass"], "train_positives": [3], "val_auroc": [0.7]})
    assert list(tables.titled(frame, tables.CLASS_COUNT_TITLES).columns) == [
        "class",
        "train positives",
        "val AUROC",
    ]
    kv = tables.key_values(
        {"epochs": 3, "loss": {"name": "bce", "pos_weight": [1, 2]}, "lr": 0.000123456}
    )
    assert kv.to_dict("records") == [
        {"field": "epochs", "value": "3"},
        {"field": "loss.name", "value": "bce"},
        {"field": "loss.pos_weight", "value": "1, 2"},
        {"field": "lr", "value": "0.000"},
    ]


def test_human_dates():
    assert tables.human_date("2026-11-22T03:49:44+00:00") == "22 Nov 2026, 03:49 UTC"
    assert tables.human_date("20240131") == "31 Jan 2024"
    assert tables.human_date(datetime(2024, 5, 1, tzinfo=timezone.utc)) == "1 May 2024"
    assert tables.human_date(None) == "–" and tables.human_date("not a date") == "not a date"


def test_metrics_table_keeps_intervals_and_averages():
    report = EvaluationReport.from_dict(
        {
            "task": "multilabel",
            "class_names": ["Mass"],
            "n_cases": 10,
            "per_class": {
                "Mass": {
                    "threshold": 0.5,
                    "auroc": 0.8,
                    "auroc_ci": [0.7, 0.9],
                    "tp": 3,
                    "low_count": False,
                }
            },
            "macro": {"auroc": 0.8},
            "micro": {"auroc": 0.75},
        }
    )
    frame = tables.metrics_table(report)
    assert list(frame["class"]) == ["Mass", "(macro average)", "(micro average)"]
    shown = tables.with_ci(frame)
    assert shown.loc[0, "auroc"] == "0.800 (0.700–0.900)" and shown.loc[1, "auroc"] == "0.800"


def test_probability_bars_in_score_order_coloured_by_call():
    from dashboard import charts

    s = _multilabel(
        {"Mass": 0.154, "Effusion": 0.9, "Nodule": 0.01},
        {"Mass": 0.154, "Effusion": 0.5, "Nodule": 0.1},
    )
    bar = charts.probability_bars(s).data[0]
    assert list(bar.y)[::-1] == [
        "Effusion  0.90",
        "Mass  0.15",
        "Nodule  0.01",
    ]  # top of the chart first
    assert list(bar.marker.color)[::-1] == [charts.POSITIVE, charts.BORDERLINE, charts.NEGATIVE]


def _two_lungs() -> np.ndarray:
    mask = np.zeros((40, 30), bool)
    mask[6:18, 4:14] = True  # x 4..13, y 6..17
    mask[8:30, 18:26] = True
    return mask


def test_lung_outline_follows_the_displayed_pixels():
    from cxr_core.inference.lungs import lung_contours

    mask = _two_lungs()
    contours = lung_contours(mask)
    full = viewer.outline_for_view(contours, mask.shape)
    assert [len(p) for p in full] == [
        len(c) + 1 for c in contours
    ]  # closed: back to the first point
    for polygon, contour in zip(full, contours):
        np.testing.assert_array_equal(
            polygon[:-1], contour
        )  # full resolution: pixel x is drawn at x
        np.testing.assert_array_equal(polygon[-1], contour[0])
    # shown at half size (longest side capped at 20 px): pixel x spans [x/2, x/2 + 1/2) of the display
    half = viewer.outline_for_view(contours, mask.shape, max_side=20)
    assert viewer.view_size(mask.shape, 20) == (15, 20)
    second = half[
        0
    ]  # the larger lung comes first: x 18..25, y 8..29 -> display x 8.75..12.25, y 3.75..14.25
    assert (second[:, 0].min(), second[:, 0].max()) == (pytest.approx(8.75), pytest.approx(12.25))
    assert (second[:, 1].min(), second[:, 1].max()) == (pytest.approx(3.75), pytest.approx(14.25))
    shown = viewer.resize_for_view(mask.astype(np.uint8) * 255, max_side=20)
    inside = np.round(second).astype(int)
    assert (shown[inside[:, 1], inside[:, 0]] > 0).all()  # the outline lies on the displayed lung


def test_lung_texts():
    from cxr_core.inference.lungs import LungCheck

    check = LungCheck(fraction=0.2468, status="ok", low=0.0494, high=0.5965)
    assert (
        reading.lung_area_text(check)
        == "Lungs: 24.7% of the image (the lung check accepts 5%–60% for a frontal film)"
    )
    assert reading.in_lung_text(0.314) == "31% of the map inside the lungs"
    assert reading.in_lung_text(float("nan")) == reading.EMPTY_MAP
    assert (
        reading.in_lung_caption(0.314, 0.2468)
        == "31% of the map inside the lungs; a map spread evenly over the film would put 25% there."
    )
    within = reading.in_lung_caption(0.314, 0.2468, within=True)
    assert within.endswith(
        "shown rescaled within the lungs and hidden outside them (the share is of the map before)."
    )
    assert reading.in_lung_caption(float("nan"), 0.25) == "An empty map (no evidence anywhere)."
    assert "no lung model at /x" in reading.no_lungs_text("there is no lung model at /x")
    assert "grown by 3% of the image side" in reading.lung_masked_text(0.03)
