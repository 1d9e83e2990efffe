"""``cxr data inspect`` exposes the CheXpert adapter's options: frontal-only, blank cells, per-class policies."""

from __future__ import annotations

import argparse
import gzip
import json

import pandas as pd
import pytest

from cxr_core.cli.commands.data import chexpert_policy
from cxr_core.cli.main import main
from cxr_core.data.formats import load_chexpert


@pytest.fixture
def real_rows(labels_root, tmp_path):
    with gzip.open(labels_root / "chexpert_train.csv.gz", "rt") as fh:
        lines = [next(fh) for _ in range(301)]
    csv = tmp_path / "train.csv"
    csv.write_text("".join(lines))
    return csv


def test_cli_options_match_the_adapter(real_rows, capsys):
    args = [
        "data",
        "inspect",
        str(real_rows),
        "--format",
        "chexpert",
        "--labels-only",
        "--json",
        "--frontal-only",
        "--blank",
        "unknown",
        "--policy",
        "default=zeros,Atelectasis=ignore,Edema=ones",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    raw = pd.read_csv(real_rows)
    frontal = raw[raw["Frontal/Lateral"] == "Frontal"]
    assert summary["images"] == len(frontal) < len(raw)
    manifest = load_chexpert(
        real_rows,
        policy={"default": "zeros", "Atelectasis": "ignore", "Edema": "ones"},
        blank="unknown",
        frontal_only=True,
        check_files=False,
    )
    assert summary["source"] == manifest.source
    assert "Atelectasis: ignore" in summary["source"] and "blank -> unknown" in summary["source"]
    edema = summary["classes"]["Edema"]["all"]  # U-Ones for Edema: -1 counts as positive
    assert (
        edema["positive"]
        == int(frontal["Edema"].isin([1, -1]).sum())
        == int(manifest.frame["Edema"].sum())
    )
    atelectasis = summary["classes"]["Atelectasis"]["all"]  # ignore: -1 unknown; blank unknown too
    assert (
        atelectasis["unknown"]
        == int((frontal["Atelectasis"].isna() | (frontal["Atelectasis"] == -1)).sum())
        > 0
    )


def test_policy_argument_parsing():
    assert chexpert_policy("zeros") == "zeros"
    assert chexpert_policy("Atelectasis=ones, Edema=zeros") == {
        "Atelectasis": "ones",
        "Edema": "zeros",
    }
    with pytest.raises(argparse.ArgumentTypeError, match="CLASS=POLICY"):
        chexpert_policy("Atelectasis=ones,Edema")


def test_unknown_class_in_policy_is_refused(real_rows, capsys):
    assert (
        main(
            [
                "data",
                "inspect",
                str(real_rows),
                "--format",
                "chexpert",
                "--labels-only",
                "--policy",
                "Atelectasis=sometimes",
            ]
        )
        == 2
    )
    assert "sometimes" in capsys.readouterr().err
