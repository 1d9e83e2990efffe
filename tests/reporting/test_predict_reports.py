"""``cxr predict --dicom-out --pdf-out --lungs`` on real NIH films made DICOM, plus the awkward inputs.

The folder holds a scored film, an out-of-domain film (a child, outside the model's training
ages), the same kind of film as PNG, a blank DICOM (refused by the input gate) and a damaged
file. Every DICOM object written must pass dciodvfy with no error, read back with pydicom and
highdicom, sit in its film's study, and give back every number exactly as predictions.csv has it.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pypdf
import pytest
from PIL import Image
from pydicom.sr.codedict import codes

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.artifacts.prediction_table import read_prediction_table
from cxr_core.cli.main import main
from cxr_core.data.labels import NIH14
from cxr_core.inference.lungs import DEFAULT_LUNG_CHECKPOINT, LungSegmenter
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import read_model_card
from cxr_core.reporting import codes as cxr_codes
from cxr_core.reporting.dicom_source import read_source_header
from cxr_core.reporting.export import dicom_objects, dicom_zip
from cxr_core.reporting.overlay import PALETTE
from cxr_core.reporting.scoring import film_study_result, score_film
from cxr_core.reporting.study import ReportContext
from tests.dicom_fixtures import film_dataset, new_ids, write_film
from tests.report_fixtures import ALWAYS_CALLED, tiny_nih14_checkpoint

ALLOWED_WARNINGS = ("Unrecognized defined term <99CXR>",)


@pytest.fixture(scope="module")
def run(nih14_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    checkpoint = tiny_nih14_checkpoint(root)
    pngs = sorted((nih14_root / "images").glob("*.png"))[:3]
    films = root / "films"
    ids = {
        "adult": new_ids("P001", "ACC001"),
        "child": new_ids("P002", "ACC002", age="010Y"),
    }
    write_film(pngs[0], films / "adult.dcm", ids["adult"])
    write_film(pngs[1], films / "child.dcm", ids["child"])
    shutil.copy(pngs[2], films / "plain.png")
    blank = film_dataset(pngs[0], new_ids("P003", "ACC003"))
    blank.PixelData = np.full((blank.Rows, blank.Columns), 100, np.uint16).tobytes()
    blank.save_as(films / "blank.dcm", enforce_file_format=True)
    (films / "broken.dcm").write_bytes(b"DICM" + bytes(range(256)) * 4)
    out = root / "out"
    args = ["predict", str(films), "--checkpoint", str(checkpoint), "--out", str(out)]
    args += ["--dicom-out", str(out / "dicom"), "--pdf-out", str(out / "pdf"), "--lungs"]
    assert main([*args, "--device", "cpu"]) == 0
    predictions = read_prediction_table(out / "predictions.csv").frame
    index = pd.read_csv(out / "dicom" / "index.csv", keep_default_na=False)
    return {
        "root": root,
        "out": out,
        "films": films,
        "ids": ids,
        "checkpoint": checkpoint,
        "predictions": predictions.set_index(predictions["path"].map(lambda p: p.split("/")[-1])),
        "index": index.set_index(index["input"].map(lambda p: p.split("/")[-1])),
    }


def _sr(run, name):
    return hd.sr.srread(run["out"] / "dicom" / name / "findings_sr.dcm")


def _groups(sr):
    return {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}


def _evaluation(group, concept):
    return next(e.value for e in group.get_qualitative_evaluations(name=concept))


def _texts(items) -> list[str]:
    """Every text value anywhere under ``items`` (a sequence of SR content items)."""
    return [e.value for item in items for e in item.iterall() if e.keyword == "TextValue"]


def test_every_object_passes_dciodvfy(run):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    objects = sorted((run["out"] / "dicom").rglob("*.dcm"))
    kinds = {p.name for p in objects}
    assert kinds == {"findings_sr.dcm", "overlay_sc.dcm", "lungs_seg.dcm"}
    for path in objects:
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        lines = (report.stdout + report.stderr).splitlines()
        errors = [line for line in lines if line.startswith("Error")]
        warnings = [line for line in lines if line.startswith("Warning")]
        assert not errors, f"{path}: {errors}"
        unexpected = [w for w in warnings if not any(a in w for a in ALLOWED_WARNINGS)]
        assert not unexpected, f"{path}: {unexpected}"


def test_sr_gives_back_every_number_exactly(run):
    card = read_model_card(run["checkpoint"])
    sha = checkpoint_digest(run["checkpoint"])
    for name, called in (("adult", set(ALWAYS_CALLED)), ("child", set())):
        sr, row = _sr(run, name), run["predictions"].loc[f"{name}.dcm"]
        groups = _groups(sr)
        assert list(groups) == list(NIH14.classes)
        for cls, group in groups.items():
            (probability,) = group.get_measurements(name=codes.DCM.Probability)
            (threshold,) = group.get_measurements(name=codes.DCM.ThresholdValue)
            assert probability.value == float(
                row[f"prob:{cls}"]
            )  # exact: the 64-bit value is stored
            assert threshold.value == card.thresholds[cls]
            assert group.finding_type == cxr_codes.finding_code(cls)
            yes = _evaluation(group, cxr_codes.CALLED) == cxr_codes.YES
            assert yes == (cls in called), cls
        outcome = _evaluation(groups["Mass"], cxr_codes.GATE_OUTCOME).value
        assert outcome == ("SCORED" if name == "adult" else "OUT_OF_DOMAIN")
        texts = _texts(groups["Mass"])  # TID 4019: algorithm name, version, parameters
        for text in ("tiny_nih14", card.created, f"weights SHA-256 {sha}"):
            assert text in texts
        assert "thresholds: model card (fixed for tests)" in texts
    child = " ".join(_texts([pydicom.dcmread(run["out"] / "dicom" / "child" / "findings_sr.dcm")]))
    assert "outside the training ages" in child and "NOT FOR DIAGNOSIS" in child


def test_sr_sits_in_the_film_study(run):
    source = pydicom.dcmread(run["films"] / "adult.dcm")
    sr = pydicom.dcmread(run["out"] / "dicom" / "adult" / "findings_sr.dcm")
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "StudyDate"):
        assert sr[keyword].value == source[keyword].value, keyword
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert sr.PreliminaryFlag == "PRELIMINARY"


def test_overlay_only_for_called_findings(run):
    path = run["out"] / "dicom" / "adult" / "overlay_sc.dcm"
    sc, source = pydicom.dcmread(path), pydicom.dcmread(run["films"] / "adult.dcm")
    assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.PatientID == source.PatientID
    assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
    pixels = hd.imread(path).get_frame(1).astype(np.uint8)
    assert np.array_equal(pixels, sc.pixel_array)
    for colour in PALETTE[: len(ALWAYS_CALLED)]:  # each called finding's swatch is in the legend
        assert (pixels == np.array(colour, np.uint8)).all(axis=2).sum() > 50
    assert not (run["out"] / "dicom" / "child" / "overlay_sc.dcm").exists()  # nothing called


def test_lung_seg_is_the_lung_mask(run):
    for name in ("adult", "child"):
        seg = hd.seg.segread(run["out"] / "dicom" / name / "lungs_seg.dcm")
        written = np.asarray(Image.open(run["out"] / "lungs" / f"{name}.png")) > 0
        assert written.any()
        assert np.array_equal(seg.pixel_array.astype(bool), written)
        source = pydicom.dcmread(run["films"] / f"{name}.dcm")
        (uid,) = seg.get_source_image_uids()[0][2:]
        assert uid == source.SOPInstanceUID and seg.StudyInstanceUID == source.StudyInstanceUID


def test_refused_unreadable_and_png_inputs(run):
    index = run["index"]
    assert index.loc["blank.dcm", "outcome"] == "refused"
    groups = _groups(_sr(run, "blank"))
    assert list(groups) == ["input gate"]  # no probabilities for a refused film
    assert not groups["input gate"].get_measurements()
    assert _evaluation(groups["input gate"], cxr_codes.GATE_OUTCOME).value == "REFUSED"
    assert not (run["out"] / "dicom" / "blank" / "overlay_sc.dcm").exists()
    assert index.loc["broken.dcm", "outcome"] == "unreadable"
    assert not (run["out"] / "dicom" / "broken").exists()
    assert "not a DICOM file" in index.loc["plain.png", "note"]
    assert not (run["out"] / "dicom" / "plain").exists()
    assert (run["out"] / "pdf" / "plain.pdf").stat().st_size > 1000


def test_uids_are_the_same_when_scored_again(run, tmp_path):
    again = tmp_path / "again"
    args = ["predict", str(run["films"] / "adult.dcm"), "--checkpoint", str(run["checkpoint"])]
    args += ["--out", str(again), "--dicom-out", str(again / "dicom"), "--lungs"]
    assert main([*args, "--device", "cpu"]) == 0
    for kind in ("findings_sr.dcm", "overlay_sc.dcm", "lungs_seg.dcm"):
        first = pydicom.dcmread(run["out"] / "dicom" / "adult" / kind)
        second = pydicom.dcmread(again / "dicom" / "adult" / kind)
        assert first.SOPInstanceUID == second.SOPInstanceUID, kind
        assert first.SeriesInstanceUID == second.SeriesInstanceUID, kind


def _pdf_text(path) -> tuple[int, str]:
    reader = pypdf.PdfReader(path)
    return len(reader.pages), " ".join(" ".join(p.extract_text() for p in reader.pages).split())


def test_pdf_report_per_film(run):
    card = read_model_card(run["checkpoint"])
    row = run["predictions"].loc["adult.dcm"]
    pages, text = _pdf_text(run["out"] / "pdf" / "adult.pdf")
    assert pages == 1
    for cls in NIH14.classes:
        probability, threshold = float(row[f"prob:{cls}"]), card.thresholds[cls]
        assert (
            f"{probability:.3f} {threshold:.3f} {'yes' if cls in ALWAYS_CALLED else 'no'}" in text
        )
    for expected in (
        "NOT FOR DIAGNOSIS",
        "Patient ID: P001",
        "Accession: ACC001",
        "Thresholds: model card (fixed for tests)",
        "Input gate: scored",
        checkpoint_digest(run["checkpoint"]),
        "Intended use:",
    ):
        assert expected in text, expected
    pages, text = _pdf_text(run["out"] / "pdf" / "child.pdf")
    assert pages == 1 and "Input gate: out of domain" in text
    assert "outside the training ages" in text and " yes" not in text
    pages, text = _pdf_text(run["out"] / "pdf" / "blank.pdf")
    assert pages == 1 and "refused" in text and "blank" in text
    pages, text = _pdf_text(run["out"] / "pdf" / "plain.pdf")
    assert pages == 1 and "Not a DICOM file" in text


def test_download_zip_holds_the_same_objects_as_the_cli(run):
    """The dashboard's path (one film's bytes -> score -> objects -> ZIP) gives the CLI's objects."""
    lungs = LungSegmenter.from_path(DEFAULT_LUNG_CHECKPOINT, device="cpu")
    predictor = Predictor.from_checkpoint(run["checkpoint"], device="cpu", lungs=lungs)
    context = ReportContext.of_run(predictor, run["checkpoint"], lungs=lungs)
    data = (run["films"] / "adult.dcm").read_bytes()
    result = film_study_result(predictor, context, score_film(predictor, data, "adult.dcm"))
    archive = zipfile.ZipFile(
        io.BytesIO(dicom_zip(dicom_objects(result, read_source_header(data))))
    )
    assert sorted(archive.namelist()) == ["findings_sr.dcm", "lungs_seg.dcm", "overlay_sc.dcm"]
    for name in archive.namelist():
        zipped = pydicom.dcmread(io.BytesIO(archive.read(name)))
        written = pydicom.dcmread(run["out"] / "dicom" / "adult" / name)
        assert zipped.SOPInstanceUID == written.SOPInstanceUID, name
