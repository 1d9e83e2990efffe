"""``cxr pacs`` against a real Orthanc (DICOMweb): upload films, query, score, store back, find them.

Three studies made from real NIH films: two adults on different dates, one child (outside the
model's training ages, so out of domain). The results must land in the films' own studies,
give back the probabilities a local scoring of the same bytes gives, not pile up when a study
is scored again, and the password must never show in anything printed or logged.
"""

from __future__ import annotations

import base64
import io
import logging

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.cli.main import main
from cxr_core.errors import PacsError
from cxr_core.inference.predictor import Predictor
from cxr_core.pacs.client import PacsClient
from cxr_core.pacs.config import load_pacs_config
from cxr_core.pacs.worklist import pacs_items
from cxr_core.reporting.scoring import score_film
from cxr_core.triage.cache import ScoreCache
from cxr_core.triage.job import WorklistJob
from tests.dicom_fixtures import new_ids, write_film
from tests.orthanc_fixture import running_orthanc
from tests.report_fixtures import ALWAYS_CALLED, tiny_nih14_checkpoint

PASSWORD = "s3cret-Pacs!pw"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    with running_orthanc(tmp_path_factory.mktemp("orthanc"), PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def films(nih14_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("films")
    pngs = sorted((nih14_root / "images").glob("*.png"))[:3]
    ids = {
        "jan": new_ids("P001", "ACC001", study_date="20240115"),
        "feb": new_ids("P002", "ACC002", study_date="20240210"),
        "child": new_ids("P003", "ACC003", study_date="20240212", age="008Y"),
    }
    paths = {key: write_film(png, folder / f"{key}.dcm", ids[key]) for key, png in zip(ids, pngs)}
    return {"ids": ids, "paths": paths, "folder": folder}


@pytest.fixture
def pacs_env(orthanc, monkeypatch):
    monkeypatch.setenv("CXR_PACS_PASSWORD", PASSWORD)
    monkeypatch.delenv("CXR_PACS_CONFIG", raising=False)
    return ["--url", orthanc.dicomweb, "--user", orthanc.user]


def _client(orthanc) -> PacsClient:
    return PacsClient(
        load_pacs_config(
            url=orthanc.dicomweb, username=orthanc.user, environ={"CXR_PACS_PASSWORD": PASSWORD}
        )
    )


def _no_secret(text: str) -> None:
    token = base64.b64encode(f"cxr-test:{PASSWORD}".encode()).decode()
    assert PASSWORD not in text and token not in text


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_nih14_checkpoint(tmp_path_factory.mktemp("model"))


@pytest.mark.slow
def test_store_query_score_and_find_results(orthanc, films, pacs_env, checkpoint, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert main(["pacs", "store", *pacs_env, str(films["folder"])]) == 0
    assert "stored 3 of 3" in capsys.readouterr().out

    assert main(["pacs", "query", *pacs_env, "--date", "20240101-20240131"]) == 0
    listed = capsys.readouterr().out
    assert films["ids"]["jan"].study_uid in listed and films["ids"]["feb"].study_uid not in listed
    assert main(["pacs", "query", *pacs_env, "--patient", "P002"]) == 0
    listed = capsys.readouterr().out
    assert films["ids"]["feb"].study_uid in listed and films["ids"]["jan"].study_uid not in listed
    assert main(["pacs", "query", *pacs_env, "--modality", "CT"]) == 0
    assert "P00" not in capsys.readouterr().out

    args = ["pacs", "score", *pacs_env, "--date", "20240101-20241231", "--lungs"]
    assert main([*args, "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = [line.split("\t") for line in table[1:]]
    assert len(rows) == 3 and all(row[5] == "" for row in rows), table
    by_study = {row[0]: row for row in rows}
    jan, child = by_study[films["ids"]["jan"].study_uid], by_study[films["ids"]["child"].study_uid]
    assert jan[2] == "scored" and set(jan[3].split(";")) == set(ALWAYS_CALLED) and jan[4] == "3"
    assert (
        child[2] == "out_of_domain" and child[3] == "" and child[4] == "2"
    )  # SR + SEG, no overlay

    client = _client(orthanc)
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    for key in ("jan", "feb", "child"):
        study = films["ids"][key].study_uid
        series = client._client.search_for_series(study)
        modalities = sorted(pydicom.Dataset.from_json(s).Modality for s in series)
        assert modalities == (["DX", "SEG", "SR"] if key == "child" else ["DX", "OT", "SEG", "SR"])
        (sr_film,) = client.find_films(study, modalities=("SR",))
        sr = hd.sr.srread(io.BytesIO(client.retrieve(sr_film)))
        assert sr.PatientID == films["ids"][key].patient_id and sr.StudyInstanceUID == study
        local = score_film(predictor, films["paths"][key].read_bytes(), key).prediction
        for group in sr.content.get_image_measurement_groups():
            (probability,) = group.get_measurements(name=codes.DCM.Probability)
            assert probability.value == local.probabilities[group.tracking_identifier]
    _no_secret(capsys.readouterr().out + capsys.readouterr().err + caplog.text)
    assert any("dicomweb_client" in r.name for r in caplog.records)  # the library did log


@pytest.mark.slow
def test_scoring_again_stores_nothing_new(orthanc, films, pacs_env, checkpoint, capsys, tmp_path):
    client = _client(orthanc)
    study = films["ids"]["feb"].study_uid
    client.store([pydicom.dcmread(films["paths"]["feb"])])
    args = ["pacs", "score", *pacs_env, "--study", study, "--lungs", "--device", "cpu"]
    assert main([*args, "--checkpoint", str(checkpoint)]) == 0
    first = sorted(f.sop_uid for f in client.find_films(study, modalities=None))
    assert main([*args, "--checkpoint", str(checkpoint)]) == 0
    assert sorted(f.sop_uid for f in client.find_films(study, modalities=None)) == first
    assert len(first) == 4  # the film, its SR, overlay and lung SEG
    out = tmp_path / "retrieved"
    assert main(["pacs", "retrieve", *pacs_env, "--study", study, "--out", str(out)]) == 0
    retrieved = {pydicom.dcmread(p).SOPInstanceUID for p in out.glob("*.dcm")}
    assert retrieved == set(first)
    capsys.readouterr()


def test_wrong_password_is_refused_without_showing_it(orthanc, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CXR_PACS_PASSWORD", "wrong-" + PASSWORD)
    code = main(["pacs", "query", "--url", orthanc.dicomweb, "--user", orthanc.user])
    err = capsys.readouterr().err
    assert code == 2 and "refused the credentials" in err and "cxr-test" in err
    assert "wrong-" not in err + caplog.text
    _no_secret(err + caplog.text)


def test_credentials_in_the_url_are_refused(orthanc, capsys):
    url = orthanc.dicomweb.replace("http://", f"http://cxr-test:{PASSWORD}@")
    assert main(["pacs", "query", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "credentials inside it" in err
    _no_secret(err)


def test_config_file_with_password(orthanc, films, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.delenv("CXR_PACS_PASSWORD", raising=False)
    config = tmp_path / "pacs.yaml"
    config.write_text(f"url: {orthanc.dicomweb}\nusername: cxr-test\npassword: '{PASSWORD}'\n")
    config.chmod(0o644)
    caplog.set_level(logging.DEBUG)
    assert main(["pacs", "query", "--config", str(config), "--patient", "P001"]) == 0
    captured = capsys.readouterr()
    assert films["ids"]["jan"].study_uid in captured.out
    assert "chmod 600" in captured.err  # readable by others: warned
    _no_secret(captured.out + captured.err + caplog.text)


def test_https_with_the_hospital_ca(tmp_path, films, capsys, monkeypatch):
    monkeypatch.setenv("CXR_PACS_PASSWORD", PASSWORD)
    with running_orthanc(tmp_path / "tls", PASSWORD, tls=True) as server:
        base = ["pacs", "query", "--url", server.dicomweb, "--user", server.user]
        assert main(base) == 2
        assert "could not be verified" in capsys.readouterr().err
        assert main([*base, "--ca-bundle", str(server.certificate)]) == 0
        assert "study_uid" in capsys.readouterr().out
        client = PacsClient(
            load_pacs_config(
                url=server.dicomweb,
                username=server.user,
                overrides={"ca_bundle": str(server.certificate)},
            )
        )
        assert client.store([pydicom.dcmread(films["paths"]["jan"])]) == [
            pydicom.dcmread(films["paths"]["jan"]).SOPInstanceUID
        ]
        with pytest.raises(PacsError, match="refused the credentials"):
            PacsClient(
                load_pacs_config(
                    url=server.dicomweb,
                    username=server.user,
                    overrides={"ca_bundle": str(server.certificate)},
                    environ={"CXR_PACS_PASSWORD": "nope"},
                )
            ).check()


def test_pacs_worklist_fetches_each_film_once(orthanc, films, checkpoint, tmp_path, monkeypatch):
    client = _client(orthanc)
    client.store([pydicom.dcmread(path) for path in films["paths"].values()])
    items = pacs_items(client, date="20240101-20241231")
    assert sorted(i.patient_id for i in items) == [
        "P001",
        "P002",
        "P003",
    ]  # the films, not our objects
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    cache = ScoreCache(tmp_path / "cache", checkpoint_digest(checkpoint))
    first = WorklistJob(predictor, items, cache).start()
    assert first.wait(120) and first.snapshot().done == 3
    fetched = []
    monkeypatch.setattr(PacsClient, "retrieve", lambda self, film: fetched.append(film) or b"")
    again = WorklistJob(predictor, pacs_items(client, date="20240101-20241231"), cache).start()
    assert again.wait(120)
    assert fetched == [] and all(e.cached for e in again.snapshot().entries)
