from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.formats import load_nih
from cxr_core.data.inspect import format_summary, summarise
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.data.splits import FOLLOWED_COLUMN, assign_splits, check_leakage, leakage_report
from cxr_core.errors import DatasetError, LeakageError

SPACE = LabelSpace("toy", ("Common", "Rare"))


def _manifest(n_patients: int = 200, images: int = 3, seed: int = 0, split: str = "") -> Manifest:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        rare = p % 20 == 0
        for k in range(1 + p % images):
            rows.append(
                {
                    "image_id": f"p{p}_{k}.png",
                    "path": f"/x/p{p}_{k}.png",
                    "patient_id": f"p{p}",
                    "view": "PA",
                    "split": split,
                    "Common": float(rng.random() < 0.4),
                    "Rare": float(rare and k == 0),
                }
            )
    return Manifest(pd.DataFrame(rows), SPACE, "toy")


def _patients_per_split(m: Manifest) -> pd.Series:
    return m.frame.groupby("patient_id")["split"].nunique()


def test_patient_level_fractions_and_determinism() -> None:
    m = _manifest()
    a = assign_splits(m, val=0.2, test=0.1, seed=3)
    assert (_patients_per_split(a) == 1).all()
    share = a.frame["split"].value_counts(normalize=True)
    assert share["val"] == pytest.approx(0.2, abs=0.02) and share["test"] == pytest.approx(
        0.1, abs=0.02
    )
    assert a.frame["split"].equals(assign_splits(m, val=0.2, test=0.1, seed=3).frame["split"])
    assert not a.frame["split"].equals(assign_splits(m, val=0.2, test=0.1, seed=4).frame["split"])
    rare = a.frame[a.frame["Rare"] == 1]  # 10 rare patients: each split gets some
    assert set(rare["split"]) == {"train", "val", "test"}
    check_leakage(a)


def test_patients_with_many_images_are_not_pushed_into_train() -> None:
    frame = assign_splits(_manifest(n_patients=400, images=8), val=0.2, test=0.1, seed=0).frame
    images_per_patient = (
        frame.groupby("split").size() / frame.groupby("split")["patient_id"].nunique()
    )
    overall = len(frame) / frame["patient_id"].nunique()
    assert (images_per_patient / overall).between(0.85, 1.15).all(), images_per_patient.to_dict()


def test_existing_assignments_count_and_test_never_moves() -> None:
    m = _manifest()
    frame = m.frame.copy()
    test_patients = {f"p{p}" for p in range(0, 40)}
    frame.loc[frame["patient_id"].isin(test_patients), "split"] = "test"
    frame.loc[frame["patient_id"] == "p50", "split"] = "train"
    frame.loc[frame["image_id"] == "p41_0.png", "split"] = (
        "val"  # p41 has 2 images; the other must follow
    )
    m = m.with_frame(frame)
    out = assign_splits(m, val=0.15, seed=0)
    f = out.frame.set_index("image_id")
    test_ids = list(frame.loc[frame["split"] == "test", "image_id"])
    assert (f.loc[test_ids, "split"] == "test").all()
    assert f.loc["p41_1.png", "split"] == "val" and f.loc["p50_0.png", "split"] == "train"
    assert out.frame["split"].value_counts(normalize=True)["val"] == pytest.approx(0.15, abs=0.02)
    assert "" not in set(out.frame["split"])

    redealt = assign_splits(out, val=0.3, seed=1, keep_existing=False)
    assert (
        redealt.frame.loc[redealt.frame["patient_id"].isin(test_patients), "split"].eq("test").all()
    )
    assert redealt.frame["split"].value_counts(normalize=True)["val"] == pytest.approx(
        0.3, abs=0.02
    )
    assert (
        assign_splits(out, val=0.3, seed=1).frame["split"].equals(out.frame["split"])
    )  # nothing left to assign


def test_real_nih_split_keeps_every_finding_in_val(nih14_root) -> None:
    m = assign_splits(load_nih(nih14_root), val=0.15, seed=0)
    check_leakage(m)
    assert set(m.frame["split"]) == {"train", "val"}  # no test share asked, so none made
    val = m.split("val")
    assert len(val) / len(m) == pytest.approx(0.15, abs=0.01)
    assert (val.labels().sum(axis=0) > 0).all()


def test_leakage_detected_and_reported() -> None:
    m = assign_splits(_manifest(), val=0.2, seed=0)
    frame = m.frame.copy()
    p2_rows = frame.index[frame["patient_id"] == "p2"]
    frame.loc[p2_rows[0], "split"] = "train"
    frame.loc[p2_rows[1:], "split"] = "val"
    leaky = m.with_frame(frame)
    report = leakage_report(leaky)
    assert report["ok"] is False and report["patients_in_several_splits"] == 1
    assert report["examples"] == [{"patient_id": "p2", "images_per_split": {"train": 1, "val": 2}}]
    with pytest.raises(LeakageError, match=r"1 patient\(s\) .*p2 \(train: 1, val: 2\)"):
        check_leakage(leaky)
    assert leakage_report(m) == {
        "ok": True,
        "patients_in_several_splits": 0,
        "examples": [],
        "moved_to_patient_split": {"images": 0, "patients": 0, "images_per_split": {}},
    }


def test_pool_images_following_their_patient_are_counted(caplog, tmp_path) -> None:
    m = _manifest(n_patients=100, images=3)
    frame = m.frame.copy()
    # p1 (two images) and p5 (three) have one image in the held-out sets, the rest in the pool.
    for pid, split in (("p1", "test"), ("p5", "val")):
        frame.loc[frame.index[frame["patient_id"] == pid][0], "split"] = split
    with caplog.at_level("WARNING", logger="cxr_core.data.splits"):
        out = assign_splits(m.with_frame(frame), val=0.2, seed=0)
    assert (_patients_per_split(out) == 1).all()
    moved = {"images": 3, "patients": 2, "images_per_split": {"val": 2, "test": 1}}
    assert leakage_report(out)["moved_to_patient_split"] == moved
    assert "3 image(s) of 2 patient(s) given as training pool were moved" in caplog.text
    assert "2 to val, 1 to test" in caplog.text
    assert sorted(out.frame.loc[out.frame[FOLLOWED_COLUMN], "image_id"]) == [
        "p1_1.png",
        "p5_1.png",
        "p5_2.png",
    ]
    # The record survives saving the manifest and a later assignment that moves nothing.
    reloaded = Manifest.load(out.save(tmp_path / "m.csv"))
    assert (
        leakage_report(assign_splits(reloaded, val=0.2, seed=0))["moved_to_patient_split"] == moved
    )
    text = format_summary(summarise(out, check_files=False))
    assert (
        "moved to keep patients together: 3 image(s) of 2 patient(s) given as training pool (2 to val, 1 to test)"
        in text
    )


def test_nothing_moved_nothing_logged(caplog) -> None:
    with caplog.at_level("WARNING", logger="cxr_core.data.splits"):
        out = assign_splits(_manifest(), val=0.2, seed=0)
    assert caplog.text == "" and not out.frame[FOLLOWED_COLUMN].any()
    assert "moved to keep" not in format_summary(summarise(out, check_files=False))


def test_bad_fractions() -> None:
    with pytest.raises(DatasetError, match="fractions"):
        assign_splits(_manifest(), val=0.6, test=0.5)
