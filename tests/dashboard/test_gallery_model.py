"""Clicks on the Performance page name the right films; its tables show no "None"."""

from __future__ import annotations

import numpy as np

from cxr_core.metrics import evaluation_report
from dashboard import gallery_model, performance_tables


def report(task: str = "multilabel"):
    rng = np.random.default_rng(0)
    if task == "multilabel":
        labels = (rng.random((80, 3)) < [0.4, 0.3, 0.0]).astype(float)  # the third: no positives
        probs = np.clip(0.3 + 0.4 * labels + rng.normal(0, 0.2, labels.shape), 0, 1)
        names = ["Mass", "Edema", "Hernia"]
    else:
        truth = rng.integers(0, 2, 80)
        labels = np.eye(2)[truth]
        probs = np.clip(labels * 0.6 + rng.random((80, 2)) * 0.4, 0, 1)
        probs /= probs.sum(axis=1, keepdims=True)
        names = ["Normal", "Pneumonia"]
    return evaluation_report(labels, probs, names, task, n_boot=30)


def test_row_cell_curve_and_confusion_clicks_name_their_films():
    rep = report()
    assert gallery_model.selection_from_row(rep, 1).class_name == "Edema"
    assert gallery_model.selection_from_row(rep, 7) is None
    fp = gallery_model.selection_from_cell(rep, 0, "FP")
    assert (fp.class_name, fp.outcomes) == ("Mass", ("FP",))
    assert gallery_model.selection_from_cell(rep, 0, "ppv") is None  # not a count
    point = gallery_model.selection_from_curve([{"customdata": [0.42, "Edema"], "x": 0.1}])
    assert (point.class_name, point.threshold, point.outcomes) == ("Edema", 0.42, ("FP", "FN"))
    assert gallery_model.selection_from_curve([{"customdata": [None, "Edema"]}]) is None
    cell = gallery_model.selection_from_confusion(
        [{"x": "Pneumonia", "y": "Normal"}], ["Normal", "Pneumonia"]
    )
    assert (cell.class_name, cell.predicted) == ("Normal", "Pneumonia")


def test_tables_never_show_none_and_multiclass_has_no_threshold():
    for task in ("multilabel", "multiclass"):
        tables = performance_tables.per_class_tables(report(task))
        for name, table in tables.items():
            cells = set(table.astype(str).to_numpy().ravel())
            assert not {"None", "nan", "<NA>"} & cells, (task, name)
        columns = set(tables["discrimination"].columns) | set(tables["predictive"].columns)
        assert ("threshold" in columns) == (task == "multilabel")
        assert ("accuracy" in columns) == (task == "multilabel")
    hernia = performance_tables.per_class_tables(report())["discrimination"].iloc[2]
    assert hernia["auroc"] == "–" and hernia["⚑ low count"] == "⚑"


def test_curve_legend_carries_the_value_and_its_interval():
    rep = report()
    mass = rep.per_class["Mass"]
    legend = performance_tables.curve_legend(rep, "auroc")
    assert legend["Mass"] == (
        f"Mass · AUROC {mass.auroc:.3f} ({mass.auroc_ci[0]:.2f}–{mass.auroc_ci[1]:.2f})"
    )
    assert legend["Hernia"] == "Hernia · AUROC –"
    assert performance_tables.curve_legend(rep, "ap")["Edema"].startswith("Edema · AP 0.")


def test_thumbnail_captions_say_what_the_film_is():
    film = {"image_id": "f1.png", "prob": 0.834, "label": 0.0, "outcome": "FP"}
    assert gallery_model.film_caption(film, "A: present · B: absent", "Edema") == (
        "f1.png  \np(Edema) 0.83 · label absent · FP  \nreaders: A: present · B: absent"
    )
    cell = {"image_id": "f2.png", "prob": 0.3, "label": 1.0, "outcome": "called Pneumonia"}
    assert gallery_model.film_caption(cell, class_name="Normal") == (
        "f2.png  \np(Normal) 0.30 · true Normal · called Pneumonia"
    )
