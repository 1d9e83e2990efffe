"""The Worklist page and its hand-over to the Predict page, under Streamlit's AppTest, on real NIH films."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import worklist
from dashboard.worklist_handover import HANDOVER, HandedOverFilm
from tests.dicom_fixtures import new_ids, write_film
from tests.report_fixtures import tiny_nih14_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120


@pytest.fixture(scope="module")
def setup(nih14_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("worklist_page")
    checkpoint = tiny_nih14_checkpoint(root / "checkpoints")
    films = root / "films"
    films.mkdir()
    for png in sorted((nih14_root / "images").glob("*.png"))[:6]:
        shutil.copy(png, films / png.name)
    return {"root": root, "checkpoint": checkpoint, "films": films}


@pytest.fixture
def env(setup, tmp_path, monkeypatch):
    monkeypatch.setenv("CXR_CHECKPOINT_DIRS", str(setup["root"] / "checkpoints"))
    monkeypatch.setenv("CXR_WORKLIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXR_REVIEW_DIR", str(tmp_path / "review"))
    for name in ("CXR_PACS_URL", "CXR_PACS_CONFIG", "CXR_PACS_USER", "CXR_PACS_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _worklist(setup) -> AppTest:
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "worklist.py"), default_timeout=TIMEOUT)
    at.session_state["cxr_selected_checkpoint"] = str(setup["checkpoint"].parent.resolve())
    at.query_params["folder"] = str(setup["films"])
    return at


def _until_scored(at: AppTest, total: int, attempts: int = 200):
    """Rerun until the progress bar says every film is scored (the job runs in the background)."""
    for _ in range(attempts):
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        texts = [p.proto.text for p in at.get("progress")]
        if any(f"Scored {total} of {total}" in t for t in texts):
            return texts
    pytest.fail(f"the worklist did not finish: {texts}")


def test_folder_worklist_scores_sorts_and_survives_a_reload(setup, env):
    at = _worklist(setup)
    texts = _until_scored(at, 6)
    assert not any("from the cache" in t for t in texts)
    (table,) = at.dataframe
    frame = table.value
    assert len(frame) == 6 and list(frame["rank"]) == list(range(1, 7))
    assert (frame["critical"] == "⚠ Pneumothorax").all()  # threshold 0 in the fixture's card
    assert list(frame["abnormality"]) == sorted(frame["abnormality"], reverse=True)

    reloaded = _worklist(setup)  # a new session (a reload): the same folder from the URL
    reloaded.run()
    texts = [p.proto.text for p in reloaded.get("progress")]
    assert any("Scored 6 of 6" in t for t in texts)  # the server's job, already done
    worklist._jobs.clear()  # as after a server restart: only the on-disk cache is left
    texts = _until_scored(_worklist(setup), 6)
    assert any("(6 from the cache)" in t for t in texts)


def test_no_pacs_configured_says_how(setup, env):
    at = _worklist(setup)
    at.run()
    at.segmented_control(key="wl_source").set_value("PACS").run()
    assert any("No PACS is configured" in i.value for i in at.info)


@pytest.mark.parametrize("kind", ["png", "dicom"])
def test_predict_page_reads_a_handed_over_film(setup, env, kind, tmp_path):
    png = sorted(setup["films"].glob("*.png"))[0]
    film = png if kind == "png" else write_film(png, tmp_path / "film.dcm", new_ids("P9", "A9"))
    at = AppTest.from_file(str(REPO_ROOT / "app_pages" / "predict.py"), default_timeout=TIMEOUT)
    at.session_state["cxr_selected_checkpoint"] = str(setup["checkpoint"].parent.resolve())
    at.session_state[HANDOVER] = HandedOverFilm(film.name, film.read_bytes())
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(film.name in m.value for m in at.markdown)
    assert any("Opened from the worklist" in c.value for c in at.caption)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Report (PDF)" in labels
    assert ("DICOM results (ZIP)" in labels) == (kind == "dicom")
    if kind == "png":
        assert any("is not a DICOM file" in c.value for c in at.caption)
