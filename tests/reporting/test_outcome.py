"""The gate outcome of a film and the calls it allows, as every deliverable reads them."""

from __future__ import annotations

import pytest

from cxr_core.inference.predictor import Prediction
from cxr_core.reporting.outcome import (
    OUT_OF_DOMAIN,
    REFUSED,
    SCORED,
    UNREADABLE,
    GateOutcome,
    outcome_of,
)
from cxr_core.reporting.study import finding_calls

PREDICTION = Prediction(
    probabilities={"Pneumothorax": 0.7, "Mass": 0.2},
    positive=["Pneumothorax"],
    thresholds={"Pneumothorax": 0.4, "Mass": 0.5},
)


def test_the_outcome_is_the_predictors():
    ood = Prediction(
        {"Mass": 0.7},
        [],
        {"Mass": 0.5},
        "a.png",
        ["lateral view (LL)", "age"],
        OUT_OF_DOMAIN,
        "lateral view (LL)",
        True,
    )
    got = outcome_of(ood)
    assert (got.outcome, got.reason, got.warnings, got.scored_anyway) == (
        OUT_OF_DOMAIN,
        "lateral view (LL)",
        ("lateral view (LL)", "age"),
        True,
    )
    assert got.calls_allowed and outcome_of(PREDICTION).outcome == SCORED
    refused = outcome_of(Prediction.refused("x.dcm", "x.dcm: the image is blank", {}))
    assert (refused.outcome, refused.reason) == (REFUSED, "x.dcm: the image is blank")
    assert not refused.has_probabilities


@pytest.mark.parametrize(("readable", "outcome"), [(True, REFUSED), (False, UNREADABLE)])
def test_a_film_the_predictor_never_judged(readable, outcome):
    got = outcome_of(None, error="x.dcm: unreadable", readable=readable)
    assert (got.outcome, got.reason, got.warnings) == (outcome, "x.dcm: unreadable", ())


def test_out_of_domain_films_keep_probabilities_but_lose_calls():
    scored = finding_calls(PREDICTION, GateOutcome(SCORED), multilabel=True)
    assert [(f.name, f.probability, f.threshold, f.called) for f in scored] == [
        ("Pneumothorax", 0.7, 0.4, True),
        ("Mass", 0.2, 0.5, False),
    ]
    ood = finding_calls(PREDICTION, GateOutcome(OUT_OF_DOMAIN, "x"), multilabel=True)
    assert [f.probability for f in ood] == [0.7, 0.2] and not any(f.called for f in ood)
    anyway = finding_calls(
        PREDICTION, GateOutcome(OUT_OF_DOMAIN, "x", scored_anyway=True), multilabel=True
    )
    assert [f.called for f in anyway] == [True, False]
    assert finding_calls(PREDICTION, GateOutcome(REFUSED, "blank"), multilabel=True) == ()
    single = finding_calls(PREDICTION, GateOutcome(SCORED), multilabel=False)
    assert [f.threshold for f in single] == [None, None]


def test_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="unknown gate outcome"):
        GateOutcome("maybe")
