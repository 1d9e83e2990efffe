"""Counts against torchxrayvision 1.5.7 on the same label files (benchmarks/compare_xrv_counts.py):
equal everywhere except the differences the README's format table explains, listed here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "compare_xrv_counts.py"
# (format, row) -> (cxr, torchxrayvision) for every explained difference; all other rows are equal.
EXPLAINED = {
    ("mimic-cxr", "images"): (7, 6),  # it drops images of studies without a label row
    ("mimic-cxr", "patients"): (3, 2),
    ("siim-acr", "images"): (12047, 12954),  # it counts rows, one per region
    ("siim-acr", "Pneumothorax"): (2669, 3576),
    ("padchest", "images"): (160861, 158616),  # it drops unlabelled, young / no birth year, broken
    ("padchest", "patients"): (67625, 66246),
}
# PadChest on the images torchxrayvision keeps: its substring match counts other terms.
PADCHEST_KEPT = {
    "Emphysema": (1535, 1738),
    "Pleural Effusion": (9945, 9984),
    "Nodule": (4067, 6226),
    "Mass": (1364, 1487),
}


@pytest.fixture(scope="module")
def compare(labels_root):
    pytest.importorskip("torchxrayvision")
    spec = importlib.util.spec_from_file_location("compare_xrv_counts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    import torchxrayvision as xrv

    cases = {case.fmt: case for case in module._cases(xrv)}
    return lambda fmt: module.compare(cases[fmt], labels_root, xrv)


@pytest.mark.slow
@pytest.mark.parametrize(
    "fmt",
    [
        "nih",
        "nih-expert",
        "chexpert",
        "mimic-cxr",
        "rsna-pneumonia",
        "siim-acr",
        "vindr-cxr",
        "openi",
        "nlm-tb",
    ],
)
def test_counts_equal_torchxrayvision_or_explained(compare, fmt):
    rows, _ = compare(fmt)
    for what, ours, theirs in rows:
        if ours == "-" or theirs == "-":
            continue  # a class only one tool has (No Finding), or no patient column
        assert (ours, theirs) == EXPLAINED.get((fmt, what), (theirs, theirs)), (fmt, what)


@pytest.mark.slow
def test_padchest_differs_only_where_explained(compare):
    rows, kept = compare("padchest")
    assert {what: (a, b) for what, a, b in rows if (("padchest", what) in EXPLAINED)} == {
        what: value for (fmt, what), value in EXPLAINED.items() if fmt == "padchest"
    }
    for what, ours, theirs in kept:
        if ours != "-" and theirs != "-":
            assert (ours, theirs) == PADCHEST_KEPT.get(what, (theirs, theirs)), what
