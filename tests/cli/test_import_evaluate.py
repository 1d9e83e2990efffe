"""`cxr import` then `cxr evaluate`: foreign models are scored on the NIH classes they share."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14, XRV18
from cxr_core.inference.predictor import Predictor
from tests.models.test_importing import CheXNet, _legacy

xrv = pytest.importorskip("torchxrayvision")

pytestmark = pytest.mark.slow


def _import_and_evaluate(
    tmp_path, nih, weights, classes, *extra
) -> tuple[dict, pd.DataFrame, object]:
    out = tmp_path / weights.stem
    assert (
        main(
            [
                "import",
                "--weights",
                str(weights),
                "--arch",
                "densenet121",
                "--classes",
                classes,
                *extra,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    checkpoint = out / "model.safetensors"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(checkpoint),
                "--data",
                str(nih),
                "--split",
                "val",
                "--val",
                "0.5",
                "--n-boot",
                "10",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    report = json.loads((out / "eval" / "val" / "report.json").read_text())
    return report, pd.read_csv(out / "eval" / "val" / "predictions.csv"), checkpoint


def test_torchxrayvision_and_chexnet_models_evaluate_on_nih(nih_subset, tmp_path):
    nih = nih_subset(tmp_path / "nih24", 24)
    torch.manual_seed(0)
    torch.save(xrv.models.DenseNet(weights=None).eval().state_dict(), tmp_path / "xrv_densenet.pt")
    report, frame, checkpoint = _import_and_evaluate(
        tmp_path, nih, tmp_path / "xrv_densenet.pt", "xrv18", "--preprocess", "xrv"
    )
    assert report["label_mapping"]["scored"] == list(NIH14.classes)
    assert report["label_mapping"]["model_only"] == [
        "Lung Lesion",
        "Fracture",
        "Lung Opacity",
        "Enlarged Cardiomediastinum",
    ]
    assert report["label_mapping"]["data_only"] == []
    assert list(report["per_class"]) == list(NIH14.classes)
    assert [c for c in frame.columns if c.startswith("prob:")] == [
        f"prob:{c}" for c in NIH14.classes
    ]
    # each NIH column holds the xrv output of the same finding, not of the same position
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    probs = predictor.predict_probabilities([load_image(p) for p in frame["path"][:2]])
    for cls in ("Pleural Effusion", "Cardiomegaly", "Hernia"):
        np.testing.assert_allclose(
            frame[f"prob:{cls}"][:2], probs[:, XRV18.classes.index(cls)], atol=1e-5
        )

    chexnet = CheXNet().eval()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in _legacy(chexnet.state_dict()).items()}},
        tmp_path / "chexnet.pth",
    )
    report, frame, _ = _import_and_evaluate(
        tmp_path,
        nih,
        tmp_path / "chexnet.pth",
        ",".join(c.replace("Pleural Effusion", "Effusion") for c in NIH14.classes),
    )
    assert (
        report["label_mapping"]["model_only"] == [] and report["label_mapping"]["data_only"] == []
    )
    assert report["headline"]["n_images"] == len(frame) == 12
