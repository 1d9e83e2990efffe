from __future__ import annotations

import math
from pathlib import Path

import pytest

from cxr_core.data.formats import detect_format, load_dataset, load_disease_folders
from cxr_core.errors import DatasetError


@pytest.fixture
def dataset(tmp_path: Path, make_image) -> Path:
    base = tmp_path / "Dataset"
    files = {
        "Effusion/disease": ["00000001_000.png", "00000002_000.png"],
        "Effusion/no_finding": ["00000003_000.png"],
        "Cardiomegaly/disease": ["00000001_000.png"],
        "Cardiomegaly/no_finding": ["00000002_000.png", "00000001_001.png"],
    }
    for i, (folder, names) in enumerate(files.items()):
        for name in names:
            make_image(base / folder / name, seed=i)
    return tmp_path


def test_merges_files_across_diseases(dataset: Path) -> None:
    m = load_disease_folders(dataset)
    assert m.label_space.name == "disease_folders" and m.label_space.multilabel
    assert m.classes == ("Cardiomegaly", "Pleural Effusion")
    f = m.frame.set_index("image_id")
    assert sorted(f.index) == [
        "00000001_000.png",
        "00000001_001.png",
        "00000002_000.png",
        "00000003_000.png",
    ]
    assert (
        f.loc["00000001_000.png", "Cardiomegaly"],
        f.loc["00000001_000.png", "Pleural Effusion"],
    ) == (1.0, 1.0)
    assert (
        f.loc["00000002_000.png", "Cardiomegaly"],
        f.loc["00000002_000.png", "Pleural Effusion"],
    ) == (0.0, 1.0)
    assert (
        math.isnan(f.loc["00000003_000.png", "Cardiomegaly"])
        and f.loc["00000003_000.png", "Pleural Effusion"] == 0.0
    )
    assert math.isnan(f.loc["00000001_001.png", "Pleural Effusion"])
    assert (
        f.loc["00000001_001.png", "patient_id"]
        == f.loc["00000001_000.png", "patient_id"]
        == "00000001"
    )
    assert Path(f.loc["00000001_000.png", "path"]).parent.name in ("disease", "no_finding")
    assert Path(f.loc["00000001_000.png", "path"]).is_file()


def test_detected_from_parent_or_dataset_folder(dataset: Path) -> None:
    assert detect_format(dataset) == ("disease-folders", dataset)
    assert detect_format(dataset / "Dataset")[0] == "disease-folders"
    assert len(load_dataset(dataset / "Dataset")) == 4


def test_conflicting_filing_is_an_error(dataset: Path, make_image) -> None:
    make_image(dataset / "Dataset" / "Effusion" / "no_finding" / "00000001_000.png")
    with pytest.raises(
        DatasetError,
        match=r"both disease/ and no_finding/ .*00000001_000\.png \(Pleural Effusion\)",
    ):
        load_disease_folders(dataset)


def test_bad_layouts(tmp_path: Path, make_image) -> None:
    (tmp_path / "Edema" / "disease").mkdir(parents=True)
    with pytest.raises(DatasetError, match="hold no images"):
        load_disease_folders(tmp_path)
    make_image(tmp_path / "Edema" / "disease" / "a.png")
    make_image(tmp_path / "Edema" / "maybe" / "b.png")
    with pytest.raises(DatasetError, match=r"maybe is neither disease/ nor no_finding/"):
        load_disease_folders(tmp_path)
    (tmp_path / "Edema" / "maybe" / "b.png").unlink()
    (tmp_path / "Edema" / "maybe").rmdir()
    make_image(tmp_path / "Mass" / "c.png")
    with pytest.raises(DatasetError, match=r"\['Mass'\] .* lack disease/ and no_finding/"):
        load_disease_folders(tmp_path)
    with pytest.raises(DatasetError, match="no <Disease>/disease"):
        load_disease_folders(tmp_path / "Mass")
