"""Boxes of every format that has them feed ``cxr explain-eval``: paths from the box table and
coordinates scaled from the space each format draws them in (RSNA 1024 px, VinDr the file's pixels)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from cxr_core.cli.main import main
from cxr_core.data.labels import LabelSpace
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.inference.localisation import evaluate_localisation
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint


class _BrightNet(nn.Module):
    """Logit of the first class = mean bright-pixel response: Grad-CAM points at the bright blob."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2))
        with torch.no_grad():
            self.features[0].weight.fill_(1 / 9)
            self.features[0].bias.fill_(-1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.features(x).mean(dim=(2, 3))
        return torch.cat([m, -m], dim=1)


def _film(path, top: int, left: int) -> None:
    img = np.full((64, 64), 50, np.uint8)
    img[top : top + 12, left : left + 16] = 250
    Image.fromarray(img).save(path)


def test_box_tables_are_scaled_from_their_own_space(tmp_path):
    _film(tmp_path / "rsna.png", 8, 40)
    _film(tmp_path / "vindr.png", 40, 8)
    table = pd.DataFrame(
        [  # the same blob: RSNA in 1024 px space, VinDr in the file's own 64 px
            (
                "rsna",
                str(tmp_path / "rsna.png"),
                "Lung Opacity",
                40 * 16,
                8 * 16,
                16 * 16,
                12 * 16,
                "",
                1024.0,
                1024.0,
            ),
            (
                "vindr",
                str(tmp_path / "vindr.png"),
                "Lung Opacity",
                8,
                40,
                16,
                12,
                "fused:2",
                np.nan,
                np.nan,
            ),
            (
                "vindr",
                str(tmp_path / "vindr.png"),
                "Lung Opacity",
                40 * 16,
                0,
                160,
                160,
                "R8",
                np.nan,
                np.nan,
            ),
        ],
        columns=["image_id", "path", "finding", "x", "y", "w", "h", "reader", "width", "height"],
    )
    predictor = Predictor(
        _BrightNet(),
        label_space=LabelSpace("toy", ("Lung Opacity", "Other")),
        preprocess=PreprocessConfig(
            cache_size=64, input_size=64, mean=(0.5,) * 3, std=(0.25,) * 3, in_chans=1
        ),
        target_layer=lambda m: m.features[2],
        device="cpu",
    )
    result = evaluate_localisation(predictor, table, None, progress=False)
    hits = result.per_box["hit"].tolist()
    assert hits == [True, True, False]  # the third box lies outside the 64 px film once unscaled
    iou = result.per_box["iou"].tolist()
    assert iou[0] == pytest.approx(iou[1]) and iou[0] > 0.6


def test_explain_eval_cli_on_rsna_boxes(labels_root, nih14_root, tmp_path, capsys):
    rows = pd.read_csv(labels_root / "kaggle_stage_2_train_labels.csv.zip")
    chosen = rows[rows["Target"] == 1]["patientId"].drop_duplicates().head(3)
    folder = tmp_path / "rsna"
    (folder / "stage_2_train_images").mkdir(parents=True)
    rows[rows["patientId"].isin(chosen)].to_csv(folder / "stage_2_train_labels.csv", index=False)
    for pid, film in zip(chosen, sorted((nih14_root / "images").glob("*.png"))):
        (folder / "stage_2_train_images" / f"{pid}.png").symlink_to(film)  # real 256 px films
    preprocess = PreprocessConfig(cache_size=64, input_size=64, in_chans=1)
    space = LabelSpace("toy", ("Pneumonia", "Mass"))
    card = ModelCard(
        architecture="small_cnn",
        num_classes=2,
        label_space=space.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=1,
    )
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "m.safetensors", create_model("small_cnn", 2, in_chans=1).state_dict(), card
    )
    out = tmp_path / "per_box.csv"
    assert (
        main(
            [
                "explain-eval",
                "--checkpoint",
                str(ckpt),
                "--boxes",
                str(folder),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    per_box = pd.read_csv(out)
    n_boxes = int(rows["patientId"].isin(chosen).sum())
    assert len(per_box) == n_boxes and set(per_box["finding"]) == {
        "Pneumonia"
    }  # Lung Opacity: not a model class
    assert "skipped" in capsys.readouterr().err
    assert main(["explain-eval", "--checkpoint", str(ckpt), "--bbox", str(folder / "x.csv")]) == 2
    assert "pass --images" in capsys.readouterr().err
