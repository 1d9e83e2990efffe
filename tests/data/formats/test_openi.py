"""Open-i: the real XML reports (MeSH major / automatic terms), DICOM view table, images by id."""

from __future__ import annotations

import tarfile

import pandas as pd
import pytest

from cxr_core.data.formats import detect_format, load_dataset
from cxr_core.data.formats.openi import OPENI_KEYWORDS, read_reports
from tests.data.formats.conftest import write_image

REPORTS = "NLMCXR_reports.tgz"


@pytest.fixture(scope="module")
def reports(labels_root):
    return read_reports(labels_root / REPORTS)


def test_every_image_of_every_report(labels_root, reports):
    assert detect_format(labels_root / REPORTS)[0] == "openi"
    manifest = load_dataset(labels_root / REPORTS, check_files=False)
    assert len(manifest) == 7470 == reports["image_id"].nunique()
    assert manifest.frame["patient_id"].nunique() == 3851  # reports with images
    meta = pd.read_csv(
        labels_root / "nlmcxr_dicom_metadata.csv.gz", usecols=["imageid", "View Position"]
    )
    views = manifest.frame["image_id"].map(meta.set_index("imageid")["View Position"]).fillna("")
    laterals = views.isin(["LL", "RL", "LATERAL", "LARGE LATERAL"])
    assert (
        manifest.frame["view"] == views.where(~laterals, "LATERAL")
    ).all() and laterals.sum() > 800
    normal = reports["major"] == "normal"
    assert int(manifest.frame["No Finding"].sum()) == int(normal.sum())


def test_findings_come_from_the_chosen_mesh_terms(labels_root, reports):
    for kind in ("major", "automatic"):
        frame = load_dataset(labels_root / REPORTS, mesh=kind, check_files=False).frame
        for cls, keywords in OPENI_KEYWORDS.items():
            expected = reports[kind].map(
                lambda t, k=keywords: any(w in term for term in t.split("|") for w in k)
            )
            assert int(frame[cls].sum()) == int(expected.sum()), (kind, cls)
    automatic = load_dataset(labels_root / REPORTS, mesh="automatic", check_files=False)
    assert int(automatic.frame["Cardiomegaly"].sum()) == 493


def test_extracted_reports_with_their_images(labels_root, tmp_path):
    with tarfile.open(labels_root / REPORTS) as archive:
        members = [m for m in archive.getmembers() if m.name.endswith(("/1.xml", "/10.xml"))]
        archive.extractall(tmp_path, members=members, filter="data")
    reports = read_reports(tmp_path / "ecgen-radiology")
    for i, image in enumerate(reports["image_id"]):
        write_image(tmp_path / "NLMCXR_png" / f"{image}.png", seed=i)
    manifest = load_dataset(tmp_path)
    assert len(manifest) == len(reports) == 4 and set(manifest.frame["patient_id"]) == {
        "CXR1",
        "CXR10",
    }
    assert manifest.frame["impression"].str.len().gt(0).all()
