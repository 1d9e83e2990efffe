"""The evaluation report: JSON-clean, numbers equal the metric functions and scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    brier_score_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cxr_core.metrics import (
    ClassMetrics,
    EvaluationReport,
    MetricInputError,
    evaluation_report,
    format_report,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

NAMES = ["Atelectasis", "Cardiomegaly", "Hernia", "Never Seen"]


def multilabel_case(seed: int = 0, n: int = 500):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 4)) < [0.2, 0.15, 0.01, 0.0]).astype(float)
    labels[:, 2] = 0
    labels[:4, 2] = 1  # Hernia: a handful of positives only
    labels[:, 3] = 0  # a finding nobody has
    probs = 1 / (1 + np.exp(-(rng.normal(size=(n, 4)) + 2.0 * labels - 1.5)))
    labels[rng.random((n, 4)) < 0.05] = np.nan
    return labels, probs


@pytest.fixture(scope="module")
def report():
    labels, probs = multilabel_case()
    patients = np.random.default_rng(1).integers(0, 200, labels.shape[0]).astype(str)
    return (
        labels,
        probs,
        evaluation_report(labels, probs, NAMES, "multilabel", groups=patients, n_boot=150, seed=3),
    )


def test_report_is_typed_and_round_trips_through_strict_json(report):
    *_, rep = report
    assert isinstance(rep, EvaluationReport) and isinstance(rep.per_class["Hernia"], ClassMetrics)
    text = rep.to_json()
    assert json.loads(text) == rep.to_dict()  # allow_nan=False inside: NaN would have raised
    assert EvaluationReport.from_json(text) == rep
    assert "multiclass" not in json.loads(text)  # a section the report does not have is left out


@pytest.mark.parametrize("name", ["nih14", "pneumonia", "pneumonia_type"])
def test_bundled_report_json_reads_and_writes_back_unchanged(name):
    path = REPO_ROOT / "checkpoints" / name / "eval" / "val" / "report.json"
    written = json.loads(path.read_text())
    report = EvaluationReport.from_json(path.read_text())
    assert report.to_dict() == written
    assert report.headline["macro_auroc"] == report.macro.auroc


def test_a_report_written_before_later_fields_still_reads(report):
    """A report.json from before operating points, calibration change, Brier and PPV intervals."""
    *_, rep = report
    old = rep.to_dict()
    for key in ("thresholds_from", "threshold_rule", "settings"):
        old.pop(key)
    for entry in old["per_class"].values():
        for key in ("brier", "brier_ci", "ppv_ci", "npv_ci", "f1_ci", "bootstrap_resamples_used"):
            entry.pop(key)
    old["future_section"] = {"unknown": 1}
    read = EvaluationReport.from_dict(old)
    assert read.per_class["Atelectasis"].auroc == rep.per_class["Atelectasis"].auroc
    assert read.per_class["Atelectasis"].brier is None and read.thresholds_from == ""
    assert read.settings.n_boot == 0 and not read.crossfitted


def test_a_file_that_is_no_report_is_refused_with_what_is_missing(tmp_path):
    with pytest.raises(MetricInputError, match="missing class_names, n_cases, per_class"):
        EvaluationReport.from_dict({"task": "multilabel"})
    with pytest.raises(MetricInputError, match="not valid JSON"):
        EvaluationReport.from_json("{")
    with pytest.raises(MetricInputError, match="per_class"):
        EvaluationReport.from_dict(
            {"task": "multilabel", "class_names": [], "n_cases": 0, "per_class": [1, 2]}
        )


def test_per_class_numbers_match_sklearn_and_counts(report):
    labels, probs, rep = report
    for c, name in enumerate(NAMES[:2]):
        entry = rep.per_class[name]
        known = ~np.isnan(labels[:, c])
        truth, called = labels[known, c], probs[known, c] >= 0.5
        assert entry.auroc == pytest.approx(roc_auc_score(truth, probs[known, c]), abs=1e-10)
        tn, fp, fn, tp = sk_confusion_matrix(truth, called, labels=[0, 1]).ravel()
        assert (entry.tp, entry.fp, entry.tn, entry.fn) == (tp, fp, tn, fn)
        assert entry.n_pos == truth.sum() and entry.n_neg == (truth == 0).sum()
        assert entry.n_unknown == (~known).sum()
        assert entry.threshold == 0.5
        assert entry.auroc_ci[0] < entry.auroc < entry.auroc_ci[1]
        assert entry.sensitivity_ci[0] <= entry.sensitivity <= entry.sensitivity_ci[1]
        assert entry.bootstrap_resamples_used["auroc"] == 150
        assert entry.brier == pytest.approx(brier_score_loss(truth, probs[known, c]), abs=1e-12)
        for metric in ("ppv", "npv", "f1", "brier"):
            low, high = getattr(entry, f"{metric}_ci")
            assert low < getattr(entry, metric) < high


def test_low_count_classes_are_flagged_and_left_out_of_macro(report):
    _, _, rep = report
    assert rep.per_class["Hernia"].low_count and rep.per_class["Never Seen"].low_count
    assert not rep.per_class["Atelectasis"].low_count
    assert rep.macro.classes_excluded == ["Hernia", "Never Seen"]
    assert rep.macro.auroc == pytest.approx(
        np.mean([rep.per_class[n].auroc for n in ("Atelectasis", "Cardiomegaly")])
    )
    never = rep.per_class["Never Seen"]
    assert never.auroc is None and never.auroc_ci == [None, None] and never.sensitivity is None


def test_micro_pools_all_known_labels(report):
    labels, probs, rep = report
    known = ~np.isnan(labels)
    assert rep.micro.auroc == pytest.approx(roc_auc_score(labels[known], probs[known]), abs=1e-10)
    assert rep.micro.tp == sum(rep.per_class[n].tp for n in NAMES)


def test_settings_calibration_and_curves_are_recorded(report):
    _, _, rep = report
    assert rep.settings.n_boot == 150 and rep.settings.seed == 3 and rep.settings.alpha == 0.05
    assert rep.settings.bootstrap_unit == "patient" and rep.settings.thresholds == "default 0.5"
    assert (
        set(rep.calibration) == set(NAMES) and len(rep.calibration["Atelectasis"].bins.count) == 10
    )
    roc = rep.curves["Atelectasis"].roc
    assert roc.thresholds[0] is None  # +inf start point
    assert len(roc.fpr) <= 200 and roc.fpr[-1] == 1.0


def test_given_thresholds_and_no_bootstrap():
    labels, probs = multilabel_case(2)
    rep = evaluation_report(
        labels, probs, NAMES, "multilabel", thresholds=[0.3, 0.4, 0.5, 0.6], n_boot=0
    )
    assert rep.per_class["Cardiomegaly"].threshold == 0.4
    assert rep.per_class["Cardiomegaly"].auroc_ci is None
    assert rep.settings.thresholds == "given"


def test_multiclass_section_matches_sklearn():
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 3, 240)
    probs = rng.dirichlet([1, 1, 1], 240) + 0.5 * np.eye(3)[truth]
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.eye(3)[truth]
    labels[:5] = np.nan  # unknown cases are left out
    rep = evaluation_report(
        labels, probs, ["Normal", "Bacterial", "Viral"], "multiclass", n_boot=50
    )
    mc = rep.multiclass
    pred = probs.argmax(axis=1)
    assert mc.n_cases == 235 and mc.n_unknown == 5
    assert mc.confusion_matrix == sk_confusion_matrix(truth[5:], pred[5:]).tolist()
    assert mc.balanced_accuracy == pytest.approx(balanced_accuracy_score(truth[5:], pred[5:]))
    assert mc.accuracy == pytest.approx(np.mean(truth[5:] == pred[5:]))
    text = format_report(rep)
    assert "balanced accuracy" in text and "Bacterial" in text


def test_multiclass_rows_are_one_vs_rest_of_the_argmax():
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 3, 300)
    # Flat probabilities: often no class reaches 0.5, so prob >= 0.5 rows would disagree with argmax.
    probs = rng.dirichlet([2, 2, 2], 300) + 0.3 * np.eye(3)[truth]
    probs /= probs.sum(axis=1, keepdims=True)
    patients = (np.arange(300) // 2).astype(str)
    names = ["Normal", "Bacterial", "Viral"]
    rep = evaluation_report(
        np.eye(3)[truth], probs, names, "multiclass", groups=patients, n_boot=40
    )
    pred = probs.argmax(axis=1)
    matrix = np.array(rep.multiclass.confusion_matrix)
    assert (probs.max(axis=1) < 0.5).any()
    for c, name in enumerate(names):
        entry = rep.per_class[name]
        assert entry.sensitivity == pytest.approx(matrix[c, c] / matrix[c].sum())
        assert entry.sensitivity == pytest.approx(recall_score(truth == c, pred == c))
        assert entry.ppv == pytest.approx(precision_score(truth == c, pred == c))
        assert (entry.tp, entry.fp) == (matrix[c, c], matrix[:, c].sum() - matrix[c, c])
        assert entry.threshold is None and entry.accuracy is None
        assert entry.sensitivity_ci[0] <= entry.sensitivity <= entry.sensitivity_ci[1]
    accuracy = np.mean(truth == pred)
    assert (
        rep.multiclass.accuracy
        == rep.macro.accuracy
        == rep.micro.accuracy
        == pytest.approx(accuracy)
    )
    assert rep.micro.sensitivity == pytest.approx(
        accuracy
    )  # pooled one-vs-rest recall of argmax calls
    assert rep.settings.thresholds == "argmax"


def test_multiclass_ignores_given_thresholds_with_a_warning(caplog):
    truth = np.arange(30) % 3
    probs = np.full((30, 3), 0.2) + 0.4 * np.eye(3)[truth]
    with caplog.at_level("WARNING", logger="cxr_core.metrics.report"):
        rep = evaluation_report(
            np.eye(3)[truth], probs, ["a", "b", "c"], "multiclass", thresholds=0.9, n_boot=0
        )
    assert "do not apply to a multiclass model" in caplog.text
    assert rep.per_class["a"].sensitivity == 1.0


def test_format_report_is_an_aligned_table(report):
    *_, rep = report
    text = format_report(rep)
    lines = text.splitlines()
    table = lines[1 : 1 + 2 + len(NAMES) + 3]
    assert (
        len({len(line.rstrip()) for line in table if not line.startswith(("macro", "micro"))}) == 1
    )
    assert "Hernia *" in text and "left out of macro averages" in text
    header = lines[1].split()
    first = lines[3].split()  # per-class accuracy (seed 000 asks for it) after F1 and its CI
    accuracy = rep.per_class[NAMES[0]].accuracy
    assert "acc" in header and f"{accuracy:.3f}" in first
    assert "patient-level bootstrap" in lines[0]


def test_bad_report_inputs_raise():
    labels, probs = multilabel_case(0, n=50)
    with pytest.raises(MetricInputError, match="3 class names for 4"):
        evaluation_report(labels, probs, NAMES[:3], "multilabel", n_boot=0)
    with pytest.raises(MetricInputError, match="task"):
        evaluation_report(labels, probs, NAMES, "regression", n_boot=0)
    both = np.array([[1, 1, 0.0], [0, 1, 0]])
    with pytest.raises(MetricInputError, match="row 0 marks 2"):
        evaluation_report(both, np.full((2, 3), 1 / 3), ["a", "b", "c"], "multiclass", n_boot=0)


def test_single_case_report_is_all_undefined_but_valid():
    rep = evaluation_report([[1.0]], [[0.7]], ["Pneumonia"], "multilabel", n_boot=20)
    entry = rep.per_class["Pneumonia"]
    assert entry.auroc is None and entry.tp == 1 and entry.low_count
    EvaluationReport.from_json(rep.to_json())
