"""Agreement statistics against scikit-learn (Cohen) and statsmodels (Fleiss), and the per-class table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from cxr_core.errors import MetricInputError
from cxr_core.metrics.agreement import (
    AGREEMENT_COLUMNS,
    MIN_FILMS,
    NO_VARIATION,
    TOO_FEW,
    _codes,
    _cohen_from_codes,
    agreement_table,
    cohen_kappa,
    fleiss_kappa,
    fleiss_table,
)

CATS = ("present", "absent", "unsure")


def random_ratings(rng, n_items, n_raters, noise):
    truth = rng.choice(CATS, size=n_items, p=[0.4, 0.5, 0.1])
    out = {}
    for r in range(n_raters):
        flip = rng.random(n_items) < noise
        out[f"R{r}"] = np.where(flip, rng.choice(CATS, size=n_items), truth)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_cohen_matches_sklearn_and_the_bootstrap_formula(seed):
    rng = np.random.default_rng(seed)
    r = random_ratings(rng, 60, 2, 0.3)
    expected = cohen_kappa_score(r["R0"], r["R1"])
    assert cohen_kappa(r["R0"], r["R1"]) == pytest.approx(expected, abs=1e-12)
    x, y, k = _codes(r["R0"], r["R1"])
    assert _cohen_from_codes(x, y, k) == pytest.approx(expected, abs=1e-12)


def test_cohen_undefined_cases():
    assert np.isnan(cohen_kappa(["present"], ["present"]))
    assert np.isnan(cohen_kappa(["absent"] * 5, ["absent"] * 5))
    assert cohen_kappa(["present", "absent"], ["present", "absent"]) == 1.0
    with pytest.raises(MetricInputError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_matches_statsmodels(seed):
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(seed)
    r = random_ratings(rng, 50, 3 + seed % 3, 0.35)
    long = pd.DataFrame(
        [(i, k, v[i]) for k, v in r.items() for i in range(50)], columns=["item", "rater", "rating"]
    )
    counts, categories = fleiss_table(long)
    assert counts.sum(axis=1).tolist() == [len(r)] * 50
    table, _ = inter_rater.aggregate_raters(np.stack([r[k] for k in sorted(r)], axis=1))
    assert fleiss_kappa(counts) == pytest.approx(
        inter_rater.fleiss_kappa(table, method="fleiss"), abs=1e-12
    )


def test_fleiss_textbook_example():
    """Fleiss (1971) as worked in the literature: 10 items, 14 raters, 5 categories, kappa 0.210."""
    counts = np.array(
        [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ]
    )
    assert fleiss_kappa(counts) == pytest.approx(0.2099, abs=1e-4)
    with pytest.raises(MetricInputError, match="same number"):
        fleiss_kappa([[1, 1], [2, 1]])


def long_frame(ratings: dict[str, dict[str, list]]) -> pd.DataFrame:
    """{class: {rater: [rating per item]}} -> the long table."""
    rows = [
        (f"img{i}", c, rater, v)
        for c, by_rater in ratings.items()
        for rater, values in by_rater.items()
        for i, v in enumerate(values)
        if v is not None
    ]
    return pd.DataFrame(rows, columns=["item", "class_name", "rater", "rating"])


def test_agreement_table_pairs_references_and_fleiss():
    rng = np.random.default_rng(7)
    edema = random_ratings(rng, 40, 3, 0.3)
    label = np.where(rng.random(40) < 0.5, "present", "absent")
    ratings = long_frame(
        {
            "Edema": {**edema, "label": list(label)},
            "Mass": {
                "R0": ["present", "absent", "present", None] * 4,
                "R1": ["present", "absent", "absent", "absent"] * 4,
            },
        }
    )
    table = agreement_table(ratings, references=("label",), n_boot=200, seed=1)
    assert list(table.columns) == list(AGREEMENT_COLUMNS)
    edema_rows = table[table["class_name"] == "Edema"]
    pairs = [(a, b) for a, b in zip(edema_rows["rater_a"], edema_rows["rater_b"])]
    assert pairs == [
        ("R0", "R1"),
        ("R0", "R2"),
        ("R1", "R2"),
        ("R0", "label"),
        ("R1", "label"),
        ("R2", "label"),
        ("", ""),
    ]
    r01 = edema_rows.iloc[0]
    assert r01["kappa"] == pytest.approx(cohen_kappa_score(edema["R0"], edema["R1"]))
    assert r01["ci_low"] <= r01["kappa"] <= r01["ci_high"]
    fleiss = edema_rows.iloc[-1]
    assert fleiss["statistic"] == "fleiss" and fleiss["n_raters"] == 3 and fleiss["n_items"] == 40
    mass = table[table["class_name"] == "Mass"].iloc[0]  # only items both rated count
    assert mass["n_items"] == 12
    assert mass["kappa"] == pytest.approx(
        cohen_kappa_score(["present", "absent", "present"] * 4, ["present", "absent", "absent"] * 4)
    )
    assert mass["observed_agreement"] == pytest.approx(2 / 3)
    assert mass["agreement_ci_low"] <= 2 / 3 <= mass["agreement_ci_high"]
    assert set(table["undefined"]) == {""}  # every kappa here is a number


def test_agreement_table_says_why_a_kappa_is_undefined():
    hernia_a = ["present", "absent", "absent", "present", "absent"] * 2
    hernia_b = ["absent", "absent", "present", "present", "absent"] * 2
    ratings = long_frame(
        {
            "Edema": {
                "A": ["absent"] * MIN_FILMS,
                "B": ["absent"] * MIN_FILMS,
                "C": ["absent"] * MIN_FILMS,
            },  # one category throughout
            "Mass": {
                "A": ["present", None, "absent"],
                "B": [None, "present", "absent"],
            },  # one shared item
            "Hernia": {"A": hernia_a, "B": hernia_b},
        }
    )
    table = agreement_table(ratings, n_boot=50).set_index(
        ["class_name", "statistic", "rater_a", "rater_b"]
    )
    edema = table.loc[("Edema", "cohen", "A", "B")]
    assert (
        np.isnan(edema["kappa"])
        and edema["undefined"] == NO_VARIATION
        and edema["observed_agreement"] == 1.0
    )
    fleiss = table.loc[("Edema", "fleiss", "", "")]
    assert np.isnan(fleiss["kappa"]) and fleiss["undefined"] == NO_VARIATION
    mass = table.loc[("Mass", "cohen", "A", "B")]
    assert np.isnan(mass["kappa"]) and mass["undefined"] == TOO_FEW and mass["n_items"] == 1
    hernia = table.loc[("Hernia", "cohen", "A", "B")]
    assert hernia["kappa"] == pytest.approx(cohen_kappa_score(hernia_a, hernia_b))
    assert hernia["undefined"] == ""
    # NaN exactly when a reason is given
    assert (table["kappa"].isna() == (table["undefined"] != "")).all()


@pytest.mark.parametrize("n_films", [2, 3, MIN_FILMS - 1])
def test_a_few_films_give_no_kappa_agreement_or_interval(n_films):
    """Two or three films used to show "0.000 (0.00 to 0.00)": now there is nothing to misread."""
    calls = {"A": (["present", "absent"] * 5)[:n_films], "B": (["absent", "absent"] * 5)[:n_films]}
    calls["C"] = calls["B"]
    table = agreement_table(long_frame({"Edema": calls}), n_boot=200)
    assert (table["undefined"] == TOO_FEW).all() and (table["n_items"] == n_films).all()
    numbers = ["kappa", "ci_low", "ci_high", "observed_agreement"]
    assert table[numbers + ["agreement_ci_low", "agreement_ci_high"]].isna().all().all()


def test_from_the_minimum_on_kappa_and_agreement_come_with_intervals():
    rng = np.random.default_rng(3)
    calls = random_ratings(rng, MIN_FILMS, 2, 0.3)
    row = agreement_table(long_frame({"Edema": calls}), n_boot=300).iloc[0]
    assert row["undefined"] == "" and row["n_items"] == MIN_FILMS
    assert row["ci_low"] <= row["kappa"] <= row["ci_high"]
    assert row["agreement_ci_low"] <= row["observed_agreement"] <= row["agreement_ci_high"]
    assert row["agreement_ci_high"] - row["agreement_ci_low"] > 0.1  # ten films: a wide interval


def test_agreement_table_refuses_duplicates_and_missing_columns():
    frame = long_frame({"Edema": {"R0": ["present"], "R1": ["absent"]}})
    with pytest.raises(MetricInputError, match="more than once"):
        agreement_table(pd.concat([frame, frame]))
    with pytest.raises(MetricInputError, match="lack"):
        agreement_table(frame.drop(columns="rater"))
