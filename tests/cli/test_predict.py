"""``cxr predict`` on a folder of real NIH images plus a corrupt file."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_core.artifacts.prediction_table import read_prediction_table, table_columns
from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.inference.predictor import Predictor
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    preprocess = PreprocessConfig(cache_size=64, input_size=48, in_chans=1)
    card = ModelCard(
        architecture="small_cnn",
        num_classes=14,
        label_space=NIH14.to_dict(),
        preprocess=preprocess.to_dict(),
        in_chans=1,
        thresholds={c: 0.5 for c in NIH14.classes},
    )
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    return save_checkpoint(path, create_model("small_cnn", 14, in_chans=1).state_dict(), card)


@pytest.fixture
def folder(nih14_root, tmp_path):
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    sources = sorted((nih14_root / "images").glob("*.png"))[:3]
    shutil.copy(sources[0], images / sources[0].name)
    shutil.copy(sources[1], images / sources[1].name)
    shutil.copy(sources[2], images / "nested" / sources[2].name)
    (images / "corrupt.png").write_bytes(sources[0].read_bytes()[:200])
    (images / "readme.txt").write_text("not an image, not collected")
    return images


def test_predict_folder_with_corrupt_file(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(folder),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--batch-size",
            "2",
        ]
    )
    assert code == 0
    table = read_prediction_table(out / "predictions.csv")
    frame = table.frame
    assert table.source_format == "cxr" and table.classes == list(NIH14.classes)
    assert list(frame.columns) == table_columns(NIH14.classes, labels=False, thresholds=True)
    assert len(frame) == 4
    bad = frame[frame["path"].str.endswith("corrupt.png")].iloc[0]
    assert "corrupt.png" in bad["error"] and "damaged or truncated" in bad["error"]
    assert bad["outcome"] == "unreadable" and bad["reason"] == bad["error"]
    assert np.isnan(bad["prob:Mass"])
    good = frame[frame["error"] == ""]
    assert len(good) == 3 and set(good["outcome"]) == {"scored"}
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    for _, row in good.iterrows():
        expected = predictor.predict([load_image(row["path"])])[0]
        got = np.array([row[f"prob:{c}"] for c in NIH14.classes])
        np.testing.assert_allclose(
            got, [expected.probabilities[c] for c in NIH14.classes], atol=1e-7
        )
        assert row["findings"] == "; ".join(expected.positive)
        assert row["image_id"] == os.path.basename(row["path"])
        assert row[f"threshold:{NIH14.classes[0]}"] == expected.thresholds[NIH14.classes[0]]
    err = capsys.readouterr().err
    assert "4 images: 3 scored, 0 out of domain, 0 refused by the input gate, 1 unreadable" in err
    assert "1 not image: 1 text (no row)" in err


def test_predict_writes_heatmaps_for_a_named_class(checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    files = sorted(folder.glob("0*.png"))
    code = main(
        [
            "predict",
            *map(str, files),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--heatmaps",
            "--class",
            "Effusion",
            "--method",
            "gradcam++",
        ]
    )
    assert code == 0
    written = sorted(p.name for p in (out / "heatmaps").iterdir())
    assert written == [f"{p.stem}__Pleural_Effusion.png" for p in files]
    with Image.open(out / "heatmaps" / written[0]) as im:
        assert im.mode == "RGB" and im.size == (256, 256)


def test_predict_refuses_unknown_class_and_method(checkpoint, folder, tmp_path, capsys):
    args = [
        "predict",
        str(folder),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(tmp_path / "o"),
        "--heatmaps",
    ]
    assert main([*args, "--class", "Fracture"]) == 2
    assert "Fracture" in capsys.readouterr().err
    assert main([*args, "--method", "saliency"]) == 2
    assert "gradcam" in capsys.readouterr().err
