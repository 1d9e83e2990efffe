"""Pointing game and IoU on heatmaps with known answers; parsing the real NIH box list."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import DatasetError
from cxr_core.inference.localisation import (
    box_mask,
    center_hit,
    evaluate_localisation,
    harmonise_finding,
    heatmap_iou,
    load_bboxes,
    pointing_hit,
    scale_box,
    summarise,
)
from cxr_core.inference.predictor import Predictor


def test_box_mask_covers_pixel_centres_inside_the_box():
    mask = box_mask((10, 12), (2, 3, 4, 5))  # x=2..6, y=3..8
    assert mask.sum() == 4 * 5
    assert mask[3, 2] and mask[7, 5] and not mask[8, 5] and not mask[3, 6] and not mask[2, 2]


def test_pointing_game_and_iou_known_answers():
    heat = np.zeros((20, 20), np.float32)
    heat[5:10, 5:10] = 0.8
    heat[7, 7] = 1.0
    box_exact = (5, 5, 5, 5)
    assert pointing_hit(heat, box_exact)
    assert heatmap_iou(heat, box_exact, level=0.5) == pytest.approx(1.0)
    # box covering only the left half of the hot region, peak outside it
    left = (5, 5, 2, 5)
    assert not pointing_hit(heat, left)
    assert heatmap_iou(heat, left, level=0.5) == pytest.approx(10 / 25)
    # a level above 0.8 keeps only the peak pixel
    assert heatmap_iou(heat, box_exact, level=0.9) == pytest.approx(1 / 25)
    assert heatmap_iou(np.zeros((20, 20)), box_exact) == 0.0
    assert center_hit((20, 20), (8, 8, 4, 4)) and not center_hit((20, 20), (0, 0, 5, 5))


def test_scale_box_from_1024_to_256():
    assert scale_box((512, 256, 100, 40), (256, 256)) == (128, 64, 25, 10)
    assert scale_box((512, 256, 100, 40), (512, 256)) == (128, 128, 25, 20)


def test_harmonised_names():
    assert harmonise_finding("Effusion") == "Pleural Effusion"
    assert harmonise_finding("Infiltrate") == "Infiltration"
    assert harmonise_finding("Cardiomegaly") == "Cardiomegaly"


def test_summary_rates():
    per_box = pd.DataFrame(
        {
            "finding": ["Mass", "Mass", "Nodule"],
            "border": [0.0, 0.0, 0.0],
            "hit": [True, False, True],
            "center_hit": [False, False, True],
            "iou": [0.5, 0.1, 0.3],
        }
    )
    summary = summarise(per_box).set_index("class")
    assert summary.loc["Mass", "n_boxes"] == 2 and summary.loc["Mass", "hit_rate"] == 0.5
    assert summary.loc["Mass", "mean_iou"] == pytest.approx(0.3)
    assert summary.loc["All", "n_boxes"] == 3 and summary.loc["All", "hit_rate"] == pytest.approx(
        2 / 3
    )
    assert summary.loc["All", "center_hit_rate"] == pytest.approx(1 / 3)


def test_summary_is_per_border():
    per_box = pd.DataFrame(
        {
            "finding": ["Mass"] * 4,
            "border": [0.0, 0.0, 0.1, 0.1],
            "hit": [False, False, True, False],
            "center_hit": [False] * 4,
            "iou": [0.0, 0.2, 0.4, 0.0],
        }
    )
    summary = summarise(per_box)
    total = summary[summary["class"] == "All"].set_index("border")
    assert total.loc[0.0, "hit_rate"] == 0.0 and total.loc[0.1, "hit_rate"] == 0.5
    assert total.loc[0.0, "mean_iou"] == pytest.approx(0.1) and total.loc[
        0.1, "mean_iou"
    ] == pytest.approx(0.2)


def test_summary_is_per_border_and_text_masking():
    per_box = pd.DataFrame(
        {
            "finding": ["Mass"] * 4,
            "border": [0.1] * 4,
            "mask_text": [False, True, False, True],
            "hit": [False, True, False, False],
            "center_hit": [False] * 4,
            "iou": [0.0, 0.6, 0.2, 0.2],
        }
    )
    total = summarise(per_box).query("`class` == 'All'").set_index("mask_text")
    assert list(total["border"]) == [0.1, 0.1] and list(total["n_boxes"]) == [2, 2]
    assert total.loc[False, "hit_rate"] == 0.0 and total.loc[True, "hit_rate"] == 0.5
    assert total.loc[False, "mean_iou"] == pytest.approx(0.1) and total.loc[
        True, "mean_iou"
    ] == pytest.approx(0.4)


def test_parse_real_bbox_list(nih14_root):
    boxes = load_bboxes(nih14_root / "BBox_List_2017.csv")
    assert list(boxes.columns) == ["image_id", "finding", "x", "y", "w", "h"]
    assert len(boxes) == 780
    assert set(boxes["finding"]) == {
        "Atelectasis",
        "Cardiomegaly",
        "Pleural Effusion",
        "Infiltration",
        "Mass",
        "Nodule",
        "Pneumonia",
        "Pneumothorax",
    }
    first = boxes.iloc[0]
    assert first.image_id == "00013118_008.png" and first.finding == "Atelectasis"
    assert (first.x, first.y) == pytest.approx((225.084745762712, 547.019216763771))
    assert ((boxes.x >= 0) & (boxes.x + boxes.w <= 1024 + 1e-6)).all()


def test_malformed_bbox_file_is_refused(tmp_path):
    bad = tmp_path / "boxes.csv"
    bad.write_text("Image Index,Finding Label,Bbox [x,y,w,h]\na.png,Mass,1,2,three,4\n")
    with pytest.raises(DatasetError, match="line 2"):
        load_bboxes(bad)
    bad.write_text("file,label\n")
    with pytest.raises(DatasetError, match="header"):
        load_bboxes(bad)


class _BrightNet(nn.Module):
    """Logit of "Mass" = mean bright-pixel response, so Grad-CAM points at the brightest blob."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        with torch.no_grad():
            self.features[0].weight.fill_(1 / 9)
            self.features[0].bias.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.features(x).mean(dim=(2, 3))
        return torch.cat([m, -m], dim=1)


def test_evaluate_localisation_end_to_end(tmp_path):
    from PIL import Image

    # Two 64-px images with a bright blob; boxes in 1024-px space (scale 1/16).
    img = np.full((64, 64), 50, np.uint8)
    img[8:20, 40:56] = 250
    Image.fromarray(img).save(tmp_path / "a.png")
    img2 = np.full((64, 64), 50, np.uint8)
    img2[40:56, 8:24] = 250
    Image.fromarray(img2).save(tmp_path / "b.png")
    boxes = pd.DataFrame(
        [
            ("a.png", "Mass", 40 * 16, 8 * 16, 16 * 16, 12 * 16),  # on the blob
            ("b.png", "Mass", 0, 0, 16 * 16, 16 * 16),  # wrong corner
            ("b.png", "Pneumothorax", 0, 0, 10, 10),  # not a model class
            ("missing.png", "Mass", 0, 0, 10, 10),  # image absent
        ],
        columns=["image_id", "finding", "x", "y", "w", "h"],
    )
    predictor = Predictor(
        _BrightNet(),
        label_space=LabelSpace("toy", ("Mass", "Other")),
        preprocess=PreprocessConfig(
            cache_size=64, input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3, in_chans=1
        ),
        target_layer=lambda m: m.features[2],
        device="cpu",
    )
    result = evaluate_localisation(predictor, boxes, tmp_path, progress=False)
    assert result.skipped == {"finding not a model class": 1, "image not found": 1}
    per_box = result.per_box.set_index("image_id")
    assert per_box.loc["a.png", "hit"] and not per_box.loc["b.png", "hit"]
    assert per_box.loc["a.png", "iou"] > 0.6 and per_box.loc["b.png", "iou"] == 0.0
    assert not per_box.loc["a.png", "center_hit"]
    summary = result.summary.set_index("class")
    assert summary.loc["All", "n_boxes"] == 2 and summary.loc["All", "hit_rate"] == 0.5
    assert "Mass" in result.format_table()


def test_text_masking_is_scored_on_the_same_maps(tmp_path):
    """A film whose burned-in label outshines the finding: the pointing game misses without the
    text mask and hits with it; one heatmap serves both rows."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(4)
    film = np.clip(0.3 + 0.03 * rng.standard_normal((256, 256)), 0, 1)
    film[120:180, 100:160] = 0.8  # the finding: dimmer than the label, but large
    ink = Image.fromarray(np.zeros(film.shape, np.uint8))
    ImageDraw.Draw(ink).text(
        (30, 30),
        "PORTABLE",
        fill=255,
        font=ImageFont.load_default(size=14),
        stroke_width=1,
        stroke_fill=255,
    )
    film = np.maximum(film, 0.97 * np.asarray(ink) / 255.0)
    Image.fromarray(np.round(film * 255).astype(np.uint8)).save(tmp_path / "a.png")
    boxes = pd.DataFrame(
        [("a.png", "Mass", 100 * 4, 120 * 4, 60 * 4, 60 * 4)],
        columns=["image_id", "finding", "x", "y", "w", "h"],
    )
    predictor = Predictor(
        _BrightNet(),
        label_space=LabelSpace("toy", ("Mass", "Other")),
        preprocess=PreprocessConfig(
            cache_size=256, input_size=256, mean=(0.5,) * 3, std=(0.25,) * 3, in_chans=1
        ),
        target_layer=lambda m: m.features[2],
        device="cpu",
    )
    result = evaluate_localisation(
        predictor, boxes, tmp_path, mask_text=[False, True], progress=False
    )
    per_box = result.per_box.set_index("mask_text")
    assert len(per_box) == 2 and set(per_box["border"]) == {0.08}
    assert not per_box.loc[False, "hit"] and per_box.loc[True, "hit"]
    summary = result.summary[result.summary["class"] == "All"].set_index("mask_text")
    assert summary.loc[False, "hit_rate"] == 0.0 and summary.loc[True, "hit_rate"] == 1.0
    default = evaluate_localisation(predictor, boxes, tmp_path, progress=False).per_box
    assert default["mask_text"].tolist() == [True] and default["hit"].tolist() == [
        True
    ]  # the dashboard's masking


def test_explain_eval_cli_on_real_boxes(nih14_root, tmp_path, capsys):
    import shutil

    from cxr_core.cli.main import main
    from cxr_core.data.labels import NIH14
    from cxr_core.models import create_model
    from cxr_core.models.card import ModelCard
    from cxr_core.models.checkpoint import save_checkpoint

    boxes = load_bboxes(nih14_root / "BBox_List_2017.csv")
    chosen = boxes.drop_duplicates("finding").head(3)
    images = tmp_path / "images"
    images.mkdir()
    for name in chosen["image_id"]:
        shutil.copy(nih14_root / "images" / name, images / name)
    expected_rows = boxes[boxes["image_id"].isin(chosen["image_id"])]
    torch.manual_seed(0)
    preprocess = PreprocessConfig(cache_size=64, input_size=64, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=1,
    )
    ckpt = save_checkpoint(
        tmp_path / "m.safetensors", create_model("small_cnn", 14, in_chans=1).state_dict(), card
    )

    out = tmp_path / "per_box.csv"
    code = main(
        [
            "explain-eval",
            "--checkpoint",
            str(ckpt),
            "--images",
            str(images),
            "--bbox",
            str(nih14_root / "BBox_List_2017.csv"),
            "--method",
            "gradcam",
            "--out",
            str(out),
            "--mask-text",
            "off",
            "on",
        ]
    )
    assert code == 0
    printed = capsys.readouterr()
    assert "center_hit_rate" in printed.out and "All" in printed.out
    for finding in chosen["finding"]:
        assert finding in printed.out
    assert "image not found" in printed.err
    per_box = pd.read_csv(out)
    assert len(per_box) == 2 * len(expected_rows)  # each box scored without and with the text mask
    assert per_box.groupby("mask_text").size().to_dict() == {
        False: len(expected_rows),
        True: len(expected_rows),
    }
    assert per_box["iou"].between(0, 1).all()
    # the centre pointer is a property of the boxes alone: check it independently
    for _, row in per_box.iterrows():
        box = expected_rows[
            (expected_rows.image_id == row.image_id) & (expected_rows.finding == row.finding)
        ].iloc[0]
        x, y, w, h = box.x / 4, box.y / 4, box.w / 4, box.h / 4  # 1024 -> 256 px
        assert row.center_hit == (x <= 128 <= x + w and y <= 128 <= y + h)
