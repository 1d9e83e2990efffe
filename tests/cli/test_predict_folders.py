"""``cxr predict`` on a PACS-style export: extensionless DICOM files get rows, other files a count."""

from __future__ import annotations

import zipfile

import numpy as np

from cxr_core.artifacts.prediction_table import read_prediction_table
from cxr_core.cli.main import main
from tests.cli.test_predict import checkpoint  # noqa: F401 - the module's tiny NIH14 checkpoint
from tests.reliability import crafted


def test_a_folder_of_extensionless_dicom_is_predicted(checkpoint, nih14_root, tmp_path, capsys):  # noqa: F811
    export = tmp_path / "DICOM" / "PA000001" / "ST000001" / "SE000001"
    export.mkdir(parents=True)
    sources = sorted((nih14_root / "images").glob("*.png"))[:3]
    for i, source in enumerate(sources):
        gray = crafted.to_12bit(crafted.gray_of(source.read_bytes()))
        ds = crafted.dicom_dataset(gray, PatientID=f"=P{i}")
        (export / f"IM{i:06d}").write_bytes(crafted.dicom_bytes(ds))
    (tmp_path / "DICOM" / "README.TXT").write_text("exported by PACS\n")
    with zipfile.ZipFile(tmp_path / "DICOM" / "VIEWER", "w") as archive:
        archive.writestr("viewer.exe", b"MZ")
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "DICOM"), "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args) == 0
    frame = read_prediction_table(out / "predictions.csv").frame
    assert frame["image_id"].tolist() == ["IM000000", "IM000001", "IM000002"]
    assert set(frame["outcome"]) == {"scored"}
    assert not np.isnan(frame["prob:Mass"]).any()
    err = capsys.readouterr().err
    assert "3 images" in err and "2 not images: 1 text, 1 zip (no row)" in err
