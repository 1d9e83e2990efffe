from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from cxr_core.data.formats import detect_format, load_class_folders, load_dataset
from cxr_core.data.formats.files import patient_id_from_filename
from cxr_core.errors import DatasetError


def _counts(m) -> dict[str, int]:
    return {c: int(n) for c, n in zip(m.classes, m.labels().sum(axis=0))}


def test_real_pneumonia(pneumonia_root: Path) -> None:
    m = load_class_folders(pneumonia_root)
    assert m.label_space.task == "multiclass" and m.classes == ("Normal", "Pneumonia")
    assert _counts(m) == {"Normal": 1341, "Pneumonia": 3875}
    assert set(m.frame["split"]) == {""}  # train/ is the pool a patient-level split carves val from
    f = m.frame.set_index("image_id")
    assert f.loc["train/PNEUMONIA/person1000_bacteria_2931.jpeg", "patient_id"] == "person1000"
    assert f.loc["train/NORMAL/IM-0115-0001.jpeg", "patient_id"] == "IM-0115"
    # Two views of one study, and a patient's second study, are the patient's images too.
    assert f.loc["train/NORMAL/IM-0467-0001-0001.jpeg", "patient_id"] == "IM-0467"
    assert f.loc["train/NORMAL/IM-0467-0001-0002.jpeg", "patient_id"] == "IM-0467"
    assert m.frame["patient_id"].nunique() == 2846  # 1,211 NORMAL + 1,635 PNEUMONIA patients
    assert m.frame.loc[
        m.frame["patient_id"] == m.frame["image_id"].map(lambda i: Path(i).stem)
    ].empty
    assert Path(f.loc["train/NORMAL/IM-0115-0001.jpeg", "path"]).is_file()


def test_real_pneumonia_kermany3(pneumonia_root: Path) -> None:
    m = load_class_folders(pneumonia_root, label_from="kermany3")
    names = m.frame["image_id"]
    assert m.classes == ("Normal", "Bacterial Pneumonia", "Viral Pneumonia")
    assert _counts(m) == {
        "Normal": int(names.str.contains("/NORMAL/").sum()),
        "Bacterial Pneumonia": int(names.str.contains("_bacteria_").sum()),
        "Viral Pneumonia": int(names.str.contains("_virus_").sum()),
    }
    assert _counts(m)["Bacterial Pneumonia"] + _counts(m)["Viral Pneumonia"] == 3875


def test_real_covid(covid_root: Path) -> None:
    m = load_dataset(covid_root)
    assert m.classes == ("COVID-19", "No Finding", "Pneumonia")
    assert _counts(m) == {"COVID-19": 124, "No Finding": 375, "Pneumonia": 406}
    # NIH-derived file names carry the patient: 00000061_012 and 00000061_015 are one patient.
    f = m.frame.set_index("image_id")
    assert (
        f.loc["Pneumonia/00000061_012.png", "patient_id"]
        == f.loc["Pneumonia/00000061_015.png", "patient_id"]
        == "00000061"
    )


@pytest.mark.parametrize(
    ("stem", "patient"),
    [
        ("person123_bacteria_456", "person123"),
        ("person7_virus_13", "person7"),
        ("person1_virus_2_3", "person1"),
        ("IM-0115-0001", "IM-0115"),
        ("IM-0467-0001-0001", "IM-0467"),
        ("IM-0467-0002", "IM-0467"),
        ("im-0467-0001-0002", "im-0467"),
        ("NORMAL2-IM-1427-0001", "NORMAL2-IM-1427"),
        ("NORMAL2-IM-0467-0001-0001", "NORMAL2-IM-0467"),
        (
            "IM-0467",
            "IM-0467",
        ),  # no study number: not the convention, the stem stays its own patient
        ("00001280_004", "00001280"),
        ("01E392EE-69F9-4E33", "01E392EE-69F9-4E33"),
    ],
)
def test_patient_from_file_name(stem: str, patient: str) -> None:
    assert patient_id_from_filename(stem) == patient


def test_split_parents_hidden_and_other_files(tmp_path: Path, make_image) -> None:
    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            make_image(tmp_path / split / cls / f"person{len(split)}{cls[0]}_virus_1.png")
    (tmp_path / "train" / "NORMAL" / ".DS_Store").write_text("x")
    (tmp_path / "train" / "NORMAL" / "notes.txt").write_text("x")
    (tmp_path / "test" / ".hidden").mkdir()
    m = load_class_folders(tmp_path, classes=["pneumonia", "normal"])
    assert m.classes == ("Pneumonia", "Normal")
    assert sorted(m.frame["split"]) == ["", "", "test", "test", "val", "val"]
    assert (
        m.frame.set_index("image_id").loc["val/PNEUMONIA/person3P_virus_1.png", "Pneumonia"] == 1.0
    )
    assert "1 non-image files skipped" in m.source
    assert detect_format(tmp_path) == ("folders", tmp_path)


def test_bad_layouts(tmp_path: Path, make_image) -> None:
    with pytest.raises(DatasetError, match="has no sub-folders"):
        load_class_folders(tmp_path)
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(DatasetError, match="no images .* found in the class folders"):
        load_class_folders(tmp_path)
    with pytest.raises(
        DatasetError, match="(?s)not a labelled dataset layout.*\n  folders: a folder whose"
    ):
        load_dataset(tmp_path)
    make_image(tmp_path / "PNEUMONIA" / "a.png")
    with pytest.raises(DatasetError, match=r"class folder\(s\) without any image: .*NORMAL"):
        load_class_folders(tmp_path)
    make_image(tmp_path / "NORMAL" / "b.png")
    with pytest.raises(DatasetError, match=r"class\(es\) \['Pneumonia'\] not in classes"):
        load_class_folders(tmp_path, classes=["Normal"])
    with pytest.raises(DatasetError, match=r"class\(es\) \['COVID-19'\] have no images"):
        load_class_folders(tmp_path, classes=["Normal", "Pneumonia", "Covid-19"])
    make_image(tmp_path / "train" / "NORMAL" / "c.png")
    with pytest.raises(DatasetError, match="mixes split folders"):
        load_class_folders(tmp_path)


def test_kermany3_needs_bacteria_or_virus_in_name(tmp_path: Path, make_image) -> None:
    make_image(tmp_path / "NORMAL" / "IM-0001-0001.jpeg")
    make_image(tmp_path / "PNEUMONIA" / "scan7.jpeg")
    with pytest.raises(DatasetError, match=r"lack '_bacteria'/'_virus': PNEUMONIA/scan7\.jpeg"):
        load_class_folders(tmp_path, label_from="kermany3")


def test_a_dataset_of_symlinks_keeps_its_own_paths(tmp_path):
    """Clusters often link data into place; the manifest must name the links, not their targets."""
    real = tmp_path / "real"
    for cls in ("NORMAL", "PNEUMONIA"):
        (real / cls).mkdir(parents=True)
        Image.new("L", (8, 8)).save(real / cls / f"{cls.lower()}_1.png")
    linked = tmp_path / "linked"
    for cls in ("NORMAL", "PNEUMONIA"):
        (linked / cls).mkdir(parents=True)
        (linked / cls / f"{cls.lower()}_1.png").symlink_to(real / cls / f"{cls.lower()}_1.png")
    manifest = load_class_folders(linked)
    assert all(p.startswith(str(linked)) for p in manifest.frame["path"])
    assert list(manifest.frame["image_id"]) == ["NORMAL/normal_1.png", "PNEUMONIA/pneumonia_1.png"]
    assert manifest.fingerprint() == load_class_folders(real).fingerprint()
