from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_chexpert, load_dataset
from cxr_core.data.labels import CHEXPERT14
from cxr_core.errors import DatasetError, UnknownClassError

CLASSES = list(CHEXPERT14.classes)


@pytest.fixture(scope="module")
def real_csv(labels_root: Path) -> Path:
    return labels_root / "chexpert_train.csv.gz"


@pytest.fixture
def sample(real_csv: Path, tmp_path: Path, make_image) -> Path:
    """The first 20 real rows as CheXpert-v1.0-small/train.csv with a tiny JPEG at every Path."""
    with gzip.open(real_csv, "rt") as fh:
        lines = [next(fh) for _ in range(21)]
    folder = tmp_path / "CheXpert-v1.0-small"
    folder.mkdir()
    csv = folder / "train.csv"
    csv.write_text("".join(lines))
    for i, line in enumerate(lines[1:]):
        make_image(tmp_path / line.split(",")[0], seed=i)
    return csv


@pytest.fixture(scope="module")
def raw(real_csv: Path) -> pd.DataFrame:
    return pd.read_csv(real_csv)


def test_real_csv_parses_fast_and_matches_raw_counts(real_csv: Path, raw: pd.DataFrame) -> None:
    m = load_chexpert(real_csv, check_files=False)
    assert len(m) == len(raw) == 223_414
    assert m.frame["patient_id"].nunique() == 64_540
    labels = m.labels()
    for j, cls in enumerate(CLASSES):  # U-Ones: positives = 1.0 plus -1.0; blank -> 0
        assert labels[:, j].sum() == ((raw[cls] == 1) | (raw[cls] == -1)).sum(), cls
    assert not np.isnan(labels).any()
    assert m.frame["view"].value_counts().to_dict() == {
        "AP": 161_590,
        "LATERAL": 32_387,
        "PA": 29_420,
        "LL": 16,
        "RL": 1,
    }
    assert set(m.frame["sex"]) <= {"F", "M", ""}


def test_policies_and_blank_on_real_rows(real_csv: Path, raw: pd.DataFrame) -> None:
    policy = {"default": "zeros", "Atelectasis": "ignore", "Edema": "ones"}
    m = load_chexpert(
        real_csv, policy=policy, blank="unknown", frontal_only=True, check_files=False
    )
    frontal = raw[raw["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
    assert len(m) == len(frontal) == 191_027
    f = m.frame
    assert (
        f["Atelectasis"].isna().sum()
        == (frontal["Atelectasis"].isna() | (frontal["Atelectasis"] == -1)).sum()
    )
    assert f["Edema"].sum() == frontal["Edema"].isin([1, -1]).sum()
    assert f["Cardiomegaly"].sum() == (frontal["Cardiomegaly"] == 1).sum()
    assert f["Cardiomegaly"].isna().sum() == frontal["Cardiomegaly"].isna().sum()
    assert "zeros (Edema: ones, Atelectasis: ignore)" in m.source


def test_sample_with_images(sample: Path, tmp_path: Path) -> None:
    m = load_chexpert(sample)
    assert len(m) == 20
    first = m.frame.iloc[0]
    assert first["image_id"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert first["path"] == str(tmp_path / first["image_id"])
    assert (first["patient_id"], first["view"], first["sex"], first["age"]) == (
        "patient00001",
        "AP",
        "F",
        68,
    )
    assert (
        first["No Finding"] == 1.0
        and first["Support Devices"] == 1.0
        and first["Pleural Effusion"] == 0.0
    )
    second = m.frame.iloc[
        1
    ]  # -1.0 Cardiomegaly -> 1 under U-Ones, 0 under U-Zeros, NaN under ignore
    assert second["Cardiomegaly"] == 1.0
    assert load_chexpert(sample, policy="zeros").frame.iloc[1]["Cardiomegaly"] == 0.0
    assert np.isnan(load_chexpert(sample, policy="ignore").frame.iloc[1]["Cardiomegaly"])
    assert set(m.frame["split"]) == {""}
    assert detect_format(sample.parent) == ("chexpert", sample)
    assert load_dataset(sample.parent).fingerprint() == m.fingerprint()


def test_missing_image_is_named(sample: Path, tmp_path: Path) -> None:
    gone = tmp_path / "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg"
    gone.unlink()
    with pytest.raises(
        DatasetError, match=r"1 of 20 images .*patient00003/study1/view1_frontal\.jpg"
    ):
        load_chexpert(sample)
    assert len(load_chexpert(sample, missing="drop")) == 19


def _edit(csv: Path, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(csv, index=False)


@pytest.mark.parametrize("value", ["2.0", "maybe"])
def test_bad_label_value_names_row_and_column(sample: Path, value: str) -> None:
    _edit(sample, 4, "Edema", value)
    with pytest.raises(
        DatasetError, match=r"\['Edema'\] at row 6 \(CheXpert-v1.0-small/train/patient00003/"
    ):
        load_chexpert(sample)


def test_missing_column(sample: Path) -> None:
    frame = pd.read_csv(sample).drop(columns=["Fracture"])
    frame.to_csv(sample, index=False)
    with pytest.raises(
        DatasetError, match=r"lacks the column\(s\) \['Fracture'\].*found \['Path', 'Sex'"
    ):
        load_chexpert(sample)


def test_duplicate_path(sample: Path) -> None:
    _edit(sample, 3, "Path", "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg")
    with pytest.raises(DatasetError, match=r"more than once at row 2 .*row 5 "):
        load_chexpert(sample)


def test_patient_must_be_in_path(sample: Path) -> None:
    _edit(sample, 0, "Path", "CheXpert-v1.0-small/train/anon/study1/view1_frontal.jpg")
    with pytest.raises(DatasetError, match=r"no 'patientNNNNN' folder in Path at row 2 "):
        load_chexpert(sample, check_files=False)


def test_valid_rows_are_test_and_policy_validation(sample: Path) -> None:
    _edit(sample, 0, "Path", "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg")
    m = load_chexpert(sample, check_files=False)
    assert list(m.frame["split"])[:2] == ["test", ""]
    with pytest.raises(DatasetError, match="unknown uncertainty policy"):
        load_chexpert(sample, policy="maybe")
    with pytest.raises(UnknownClassError, match="Tumour"):
        load_chexpert(sample, policy={"Tumour": "ones"})
