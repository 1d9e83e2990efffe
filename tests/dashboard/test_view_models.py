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


def _multilabel(probs, thresholds, name="a.png"):
    return summarise_findings(
        Prediction(probs, [c for c in probs if probs[c] >= thresholds[c]], thresholds, name),
        multilabel=True,
    )


def test_results_table_is_one_short_row_per_image_with_positives_first():
    s1 = _multilabel(
        {"Mass": 0.154, "Effusion": 0.9, "Nodule": 0.01, "Edema": 0.3, "Hernia": 0.5},
        {"Mass": 0.154, "Effusion": 0.5, "Nodule": 0.1, "Edema": 0.2, "Hernia": 0.4},
    )
    s2 = _multilabel(
        {"Mass": 0.01, "Effusion": 0.02, "Nodule": 0.0, "Edema": 0.0, "Hernia": 0.0},
        {"Mass": 0.154, "Effusion": 0.5, "Nodule": 0.1, "Edema": 0.2, "Hernia": 0.4},
        "b.png",
    )
    table = reading.results_table([s1, s2], [[], ["the image looks unlike the training images"]])
    assert list(table.columns) == [
        "file",
        "call",
        "findings",
        "highest finding",
        "borderline",
        "warnings",
    ]
    assert table["warnings"].tolist() == ["", "the image looks unlike the training images"]
    assert table.loc[0, "call"] == "4 findings called" and table.loc[1, "call"] == "none called"
    assert table.loc[0, "findings"] == "Effusion 0.90; Hernia 0.50; Edema 0.30; +1 more"
    assert table.loc[0, "highest finding"] == "Effusion 0.90 (threshold 0.50)"
    assert table.loc[0, "borderline"] == 1  # Mass sits on its threshold
    assert reading.top_findings_text(s1, k=5).endswith(f"{reading.BORDERLINE_MARK}Mass 0.15")
    assert table.loc[1, "findings"] == "–"


def test_headline_marks_borderline_and_multiclass_normal_is_not_red():
    s = _multilabel({"Mass": 0.154, "Nodule": 0.19}, {"Mass": 0.154, "Nodule": 0.2})
    text = reading.headline(s)
    assert ":red[**Mass**] (0.15, borderline)" in text
    assert "Borderline, not called:] Nodule (0.19 vs 0.20)" in text
    assert "Abnormality score **0.19**" in text
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
    assert reading.call_text(tie) == "Bacterial (0.55) · near tie"


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
    assert viewer.preset_window("Full range", pixels) == (0.5, 1.0)


def test_view_is_full_resolution_up_to_the_cap():
    small = np.zeros((256, 300), np.uint8)
    assert viewer.resize_for_view(small) is small
    big = np.zeros((3000, 2500), np.uint8)
    assert viewer.resize_for_view(big).shape == (2048, 1707)
    assert viewer.png_data_uri(small).startswith("data:image/png;base64,")
    assert (
        viewer.panel_height((256, 256), 2) == 540
        and viewer.panel_height((3000, 1000), 1) == viewer.MAX_VIEW_HEIGHT
    )


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


def test_viewer_contour_and_heat_modes():
    from dashboard import charts

    display = np.zeros((40, 30), np.uint8)
    heat = np.linspace(0, 1, 20 * 15, dtype=np.float32).reshape(20, 15)
    contour = charts.image_viewer(display, heat=heat, mode="contour", level=0.6, titles=("a", "b"))
    assert [t.type for t in contour.data] == ["image", "image", "contour"]
    assert contour.data[2].contours.start == contour.data[2].contours.end == 0.6
    assert contour.data[2].x[0] == pytest.approx(1.0) and contour.data[2].y[-1] == pytest.approx(
        39.0
    )  # image pixels
    shown = charts.image_viewer(display, heat=heat, mode="heat").data[2]
    assert (
        shown.type == "heatmap"
        and np.isnan(shown.z[0][0])
        and shown.z[-1][-1] == pytest.approx(1.0)
    )
    assert [t.type for t in charts.image_viewer(display).data] == ["image"]


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


def test_viewer_draws_the_lung_outline_on_every_panel():
    from dashboard import charts

    display = np.zeros((40, 30), np.uint8)
    polygons = [
        np.array([[1.0, 1.0], [5.0, 1.0], [5.0, 6.0], [1.0, 1.0]]),
        np.array([[10.0, 2.0], [12.0, 8.0], [10.0, 2.0]]),
    ]
    two = charts.image_viewer(
        display, heat=np.zeros((4, 3), np.float32), outline=polygons, titles=("a", "b")
    )
    assert [t.type for t in two.data] == ["image", "image", "contour", "scatter", "scatter"]
    lines = two.data[3:]
    assert [t.xaxis for t in lines] == ["x", "x2"] and {t.name for t in lines} == {"lung outline"}
    np.testing.assert_array_equal(
        lines[1].x, [1, 5, 5, 1, np.nan, 10, 12, 10, np.nan]
    )  # NaN lifts the pen
    np.testing.assert_array_equal(lines[0].y, [1, 1, 6, 1, np.nan, 2, 8, 2, np.nan])
    assert lines[0].line.color == charts.LUNG_OUTLINE != charts.CONTOUR
    assert [t.type for t in charts.image_viewer(display, outline=polygons).data] == [
        "image",
        "scatter",
    ]


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
