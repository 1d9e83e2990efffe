"""What the pages ask of a saved run: the calls behind its counts, its report at other thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.artifacts.catalog import load_eval_run, read_entry
from cxr_core.evaluation.run import score_predictions, write_evaluation
from cxr_core.evaluation.saved_runs import report_at_thresholds, run_decisions
from cxr_core.models.checkpoint import read_model_card
from tests.checkpoint_fixtures import build_checkpoint_dir


@pytest.fixture(scope="module")
def crossfitted(tmp_path_factory):
    """A run whose report holds out-of-fold (cross-fitted max-F1) operating points."""
    root = tmp_path_factory.mktemp("saved")
    ckpt = build_checkpoint_dir(root / "ckpts", "cf", n_cases=120, seed=5)
    run = load_eval_run(read_entry(ckpt), "val")
    card = read_model_card(ckpt / "model.safetensors")
    report = score_predictions(run.predictions, card, n_boot=0, seed=3, thresholds="max_f1")
    write_evaluation(run.dir, run.predictions, report)
    return load_eval_run(read_entry(ckpt), "val")


def test_run_decisions_rebuild_the_out_of_fold_calls_the_report_counted(crossfitted):
    run = crossfitted
    assert run.report.crossfitted
    calls = run_decisions(run, multilabel=True)
    labels = run.labels()
    for c, name in enumerate(run.classes):
        entry = run.report.per_class[name]
        assert entry.tp == int(np.sum(calls[:, c] & (labels[:, c] == 1)))
        assert entry.fp == int(np.sum(calls[:, c] & (labels[:, c] == 0)))
    # the single final threshold would count differently: the calls are really out of fold
    final = run.scores() >= np.array([run.report.per_class[c].threshold for c in run.classes])
    assert not np.array_equal(final, calls)


def test_report_at_other_thresholds_is_the_evaluation_report_of_the_predictions(crossfitted):
    run = crossfitted
    at = report_at_thresholds(run, [0.3, 0.4, 0.5], "multilabel", n_boot=20)
    first = run.classes[0]
    labels, probs = run.labels()[:, 0], run.scores()[:, 0]
    assert at.per_class[first].threshold == 0.3
    assert at.per_class[first].tp == int(np.sum((probs >= 0.3) & (labels == 1)))
    assert at.settings.bootstrap_unit == "patient" and at.settings.n_boot == 20
