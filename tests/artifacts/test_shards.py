"""Chunks, their dealing to ranks by bytes, the work folder's plan and the table merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cxr_core.artifacts.prediction_table import (
    PredictionRow,
    merge_prediction_tables,
    read_prediction_table,
    write_prediction_table,
)
from cxr_core.artifacts.shards import (
    MAX_CHUNK,
    Fingerprint,
    WorkDir,
    assign_chunks,
    chunk_bounds,
    chunk_size,
)
from cxr_core.errors import DatasetError


def test_chunk_size_depends_on_inputs_and_batch_only():
    assert chunk_size(10, batch_size=2) == 2
    assert chunk_size(10_000, batch_size=16) == 157  # ~64 chunks
    assert chunk_size(5_000_000, batch_size=16) == MAX_CHUNK
    assert chunk_size(3, batch_size=64) == 64  # never less than a batch
    assert chunk_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunk_bounds(0, 2) == []


def test_chunks_are_dealt_by_weight_to_the_least_loaded_rank():
    weights = [10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    share = assign_chunks(range(len(weights)), weights, 2)
    assert share[0] == [0]  # the heavy chunk alone balances the ten light ones
    assert share[1] == list(range(1, 11))
    assert sorted(share[0] + share[1]) == list(range(11))
    rng = np.random.default_rng(0)
    w = rng.integers(1, 1000, size=200)
    loads = [sum(w[c] for c in s) for s in assign_chunks(range(200), w, 3)]
    assert max(loads) - min(loads) <= w.max()  # greedy's bound: within one chunk
    assert assign_chunks(range(200), w, 3) == assign_chunks(range(200), w, 3)
    assert assign_chunks([], [], 2) == [[], []]


def test_work_dir_resumes_the_same_run_and_restarts_another(tmp_path):
    work = WorkDir(tmp_path, ".npy")
    plan = work.prepare("a", 10, 3, 2, weights=[1] * 10, inputs=[f"f{i}" for i in range(10)])
    assert plan.n_chunks == 4 and sorted(plan.chunks_of(0) + plan.chunks_of(1)) == [0, 1, 2, 3]
    assert work.read_plan(2) == plan and list(work.inputs())[3] == "f3"
    work.chunk_path(1).write_bytes(b"done")
    again = work.prepare("a", 10, 3, 1)
    assert again.chunks_of(0) == (0, 2, 3)  # chunk 1 is kept
    assert again.items_of(0) == 7
    with pytest.raises(RuntimeError):
        work.read_plan(2)  # made for one process
    fresh = work.prepare("b", 10, 3, 1)
    assert fresh.chunks_of(0) == (0, 1, 2, 3) and not work.chunk_path(1).exists()
    assert json.loads((work.root / "plan.json").read_text())["fingerprint"] == "b"
    work.discard()
    assert not work.root.exists()


def test_fingerprint_follows_files_and_settings(tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"1")
    first = Fingerprint("t").add({"tta": "none"}).add_file(image).hexdigest()
    assert first == Fingerprint("t").add({"tta": "none"}).add_file(image).hexdigest()
    assert first != Fingerprint("t").add({"tta": "hflip"}).add_file(image).hexdigest()
    image.write_bytes(b"22")
    assert first != Fingerprint("t").add({"tta": "none"}).add_file(image).hexdigest()


def _rows(names):
    return [
        PredictionRow(image_id=n, path=f"/x/{n}", probabilities={"A": 0.1 * i, "B": 1 / 3})
        for i, n in enumerate(names)
    ]


def test_merged_table_is_the_table_one_writer_writes(tmp_path):
    names = ["a.png", "=HYPERLINK(1).png", "c\r\nd.png", "e.png", "f.png"]
    whole = write_prediction_table(tmp_path / "whole.csv", ["A", "B"], _rows(names))
    parts = [
        write_prediction_table(tmp_path / f"p{i}.csv", ["A", "B"], rows)
        for i, rows in enumerate([_rows(names)[:2], _rows(names)[2:3], _rows(names)[3:]])
    ]
    merged = merge_prediction_tables(tmp_path / "merged.csv", parts)
    assert merged.read_bytes() == whole.read_bytes()
    assert read_prediction_table(merged).frame["image_id"].tolist() == names


def test_merge_refuses_tables_of_other_columns(tmp_path):
    a = write_prediction_table(tmp_path / "a.csv", ["A", "B"], _rows(["x"]))
    b = write_prediction_table(tmp_path / "b.csv", ["A"], _rows(["y"]))
    with pytest.raises(DatasetError, match="another header"):
        merge_prediction_tables(tmp_path / "m.csv", [a, b])
    assert not (tmp_path / "m.csv").exists()
