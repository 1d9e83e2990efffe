"""Label spaces meet by harmonised name; what one side lacks is listed, never dropped."""

from __future__ import annotations

import logging

import pytest

from cxr_core.data.labels import CHEXPERT14, NIH14, XRV18, is_known_finding, match_classes
from cxr_core.errors import UnknownClassError


def test_xrv_outputs_meet_nih_labels():
    xrv_spelling = [
        c.replace("Pleural Effusion", "Effusion").replace(
            "Pleural Thickening", "Pleural_Thickening"
        )
        for c in XRV18.classes
    ]
    mapping = match_classes(xrv_spelling, NIH14.classes)
    assert mapping.data_classes == NIH14.classes
    assert dict(mapping.shared)["Effusion"] == "Pleural Effusion"
    assert mapping.model_only == (
        "Lung Lesion",
        "Fracture",
        "Lung Opacity",
        "Enlarged Cardiomediastinum",
    )
    assert mapping.data_only == () and not mapping.identical
    assert mapping.to_dict()["renamed"] == {
        "Effusion": "Pleural Effusion",
        "Pleural_Thickening": "Pleural Thickening",
    }


def test_unmatched_classes_are_logged_and_no_overlap_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="cxr_core.data.labels"):
        mapping = match_classes(NIH14.classes, CHEXPERT14.classes)
    assert set(mapping.data_classes) == set(NIH14.classes) & set(CHEXPERT14.classes)
    assert "Hernia" in mapping.model_only and "Fracture" in mapping.data_only
    assert "labelled but not predicted: No Finding" in caplog.text
    assert match_classes(NIH14.classes, NIH14.classes).identical
    with pytest.raises(UnknownClassError, match="no class is shared"):
        match_classes(["Normal", "Pneumonia"], ["COVID-19"])


def test_known_findings_catch_typos():
    assert (
        is_known_finding("pleural_effusion")
        and is_known_finding("Lung Opacity")
        and is_known_finding("COVID19")
    )
    assert not is_known_finding("Pneumonai") and not is_known_finding("score")
