"""The triage worklist on real NIH films: background scoring, order, critical flags, filters, cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.inference.predictor import Predictor
from cxr_core.reporting.outcome import OUT_OF_DOMAIN, REFUSED, SCORED, UNREADABLE
from cxr_core.triage import job as job_module
from cxr_core.triage.cache import ScoreCache, content_hash
from cxr_core.triage.items import folder_items, upload_items
from cxr_core.triage.job import WorklistJob
from cxr_core.triage.table import filter_rows, triage_frame, triage_rows
from tests.dicom_fixtures import film_dataset, new_ids, write_film
from tests.report_fixtures import ALWAYS_CALLED, tiny_nih14_checkpoint


@pytest.fixture(scope="module")
def setup(nih14_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("worklist")
    checkpoint = tiny_nih14_checkpoint(root)
    pngs = sorted((nih14_root / "images").glob("*.png"))[:10]
    films = root / "films"
    films.mkdir()
    for png in pngs[:8]:
        shutil.copy(png, films / png.name)
    write_film(pngs[8], films / "adult.dcm", new_ids("P1", "A1"))
    write_film(pngs[9], films / "child.dcm", new_ids("P2", "A2", age="006Y"))
    blank = film_dataset(pngs[0], new_ids("P3", "A3"))
    blank.PixelData = np.full((blank.Rows, blank.Columns), 7, np.uint16).tobytes()
    blank.save_as(films / "blank.dcm", enforce_file_format=True)
    (films / "broken.png").write_bytes(pngs[0].read_bytes()[:300])
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    return {"root": root, "films": films, "predictor": predictor, "checkpoint": checkpoint}


def _run(setup, items, cache_dir):
    cache = ScoreCache(cache_dir, checkpoint_digest(setup["checkpoint"]))
    job = WorklistJob(setup["predictor"], items, cache).start()
    assert job.wait(120)
    return job.snapshot()


def _rows(setup, entries, thresholds=None):
    card = setup["predictor"].card.thresholds
    return triage_rows(entries, setup["predictor"], thresholds or card, card)


def test_worklist_orders_flags_and_filters(setup, tmp_path):
    items = folder_items(setup["films"])
    progress = _run(setup, items, tmp_path / "cache")
    assert progress.finished and progress.done == progress.total == 12
    assert progress.first_entry_s is not None and not any(e.cached for e in progress.entries)
    rows = _rows(setup, progress.entries)
    outcomes = [r.outcome.outcome for r in rows]
    assert outcomes == [SCORED] * 9 + [OUT_OF_DOMAIN, REFUSED, UNREADABLE]
    scored = rows[:9]
    assert all(r.critical == ("Pneumothorax",) for r in scored)  # card threshold 0: always
    assert [r.abnormality for r in scored] == sorted((r.abnormality for r in scored), reverse=True)
    assert all(set(r.called) == set(ALWAYS_CALLED) for r in scored)
    child = rows[9]
    assert child.name == "child.dcm" and child.called == () and child.critical == ()
    assert "training ages" in child.outcome.reason and child.abnormality is not None
    assert rows[10].name == "blank.dcm" and rows[10].findings == ()
    assert rows[11].name == "broken.png" and "damaged" in rows[11].outcome.reason
    assert rows[0].patient_id in ("", "P1") and any(r.patient_id == "P1" for r in rows)

    only = filter_rows(rows, findings=["Pneumothorax"])
    assert [r.name for r in only] == [r.name for r in scored]
    assert [r.name for r in filter_rows(rows, outcomes=[REFUSED, UNREADABLE])] == [
        "blank.dcm",
        "broken.png",
    ]
    frame = triage_frame(rows)
    assert list(frame["rank"]) == list(range(1, 13)) and frame.index[0] == rows[0].key

    stricter = dict(setup["predictor"].card.thresholds, Cardiomegaly=1.0)
    again = _rows(setup, progress.entries, stricter)  # other thresholds: new calls, no rescoring
    assert all(r.called == ("Pneumothorax",) for r in again[:9])


def test_reopened_worklist_is_not_rescored(setup, tmp_path, monkeypatch):
    items = folder_items(setup["films"])
    first = _run(setup, items, tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("a cached film was scored again")

    monkeypatch.setattr(job_module, "score_film", fail)
    second = _run(setup, items, tmp_path / "cache")
    assert all(e.cached for e in second.entries) and second.done == 12
    for a, b in zip(first.entries, second.entries):
        assert a.score == b.score  # exactly what was stored
    renamed = [(f"copy of {p.name}", p.read_bytes) for p in sorted(setup["films"].glob("0*.png"))]
    uploaded = _run(setup, upload_items(renamed + renamed[:2]), tmp_path / "cache")
    assert uploaded.done == 8 and all(e.cached for e in uploaded.entries)  # same bytes, same score


def test_another_model_misses_the_cache(setup, tmp_path):
    items = folder_items(setup["films"])[:2]
    _run(setup, items, tmp_path / "cache")
    other = ScoreCache(tmp_path / "cache", "0" * 64)
    data = items[0].read()
    assert other.get(content_hash(data)) is None
    same = ScoreCache(tmp_path / "cache", checkpoint_digest(setup["checkpoint"]))
    assert same.get(content_hash(data)) is not None
