"""NLM tuberculosis sets: the real Montgomery images and masks, the release layouts, clinical readings."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cxr_core.data.formats import detect_format, load_dataset, load_mask_set
from cxr_core.data.formats.nlm_tb import clinical_reading
from tests.data.formats.conftest import write_image


def test_real_montgomery_labels_and_masks(montgomery_root):
    assert detect_format(montgomery_root) == ("nlm-tb", montgomery_root)
    manifest = load_dataset(montgomery_root)
    assert len(manifest) == 138 and int(manifest.frame["Tuberculosis"].sum()) == 58
    assert manifest.frame["patient_id"].str.fullmatch(r"MCUCXR_\d{4}").all()
    tb = load_mask_set(montgomery_root, "nlm-tb", size=64)
    plain = load_mask_set(
        montgomery_root, "masks", size=64
    )  # the same pairs as plain image+mask folders
    np.testing.assert_array_equal(tb.masks, plain.masks)
    np.testing.assert_array_equal(tb.images, plain.images)


def test_release_layout_with_left_and_right_masks(tmp_path):
    root = tmp_path / "MontgomerySet"
    for i, label in ((1, 0), (2, 1)):
        name = f"MCUCXR_{i:04d}_{label}.png"
        write_image(root / "CXR_png" / name, size=40, seed=i)
        for side, cols in (("leftMask", slice(2, 10)), ("rightMask", slice(20, 30))):
            mask = np.zeros((40, 40), np.uint8)
            mask[5:30, cols] = 255
            (root / "ManualMask" / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "ManualMask" / side / name)
    (root / "ClinicalReadings").mkdir()
    (root / "ClinicalReadings" / "MCUCXR_0002_1.txt").write_text(
        "Patient's Sex: F\nPatient's Age: 040Y\nactive TB\n"
    )
    manifest = load_dataset(root)
    frame = manifest.frame.set_index("patient_id")
    assert frame["Tuberculosis"].to_dict() == {"MCUCXR_0001": 0.0, "MCUCXR_0002": 1.0}
    assert frame.loc["MCUCXR_0002", "sex"] == "F" and frame.loc["MCUCXR_0002", "age"] == 40
    pairs = load_mask_set(root)
    assert pairs.masks[0].sum() == 25 * (8 + 10)  # both lungs in one mask


def test_shenzhen_readings(tmp_path):
    for text, expected in (
        ("male 35yrs\nnormal", ("M", 35.0)),
        ("Female 38yrs\nPTB left upper field", ("F", 38.0)),
    ):
        (tmp_path / "r.txt").write_text(text)
        assert clinical_reading(tmp_path / "r.txt") == expected
    sex, age = clinical_reading(tmp_path / "absent.txt")
    assert sex == "" and np.isnan(age)
