"""The coded concepts our DICOM objects use: standard codes where DICOM defines one, else ours.

Finding names map to SNOMED CT codes only where the DICOM standard's own concept tables (as
shipped in pydicom) hold the matching concept; every other class, and the concepts DICOM has no
code for (the call at a threshold, the input gate's outcome), use the private coding scheme
``99CXR`` (DICOM reserves designators starting with "99" for local schemes), whose code values
are the class names themselves so a reader needs no look-up table.
"""

from __future__ import annotations

import re

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from cxr_core.reporting.outcome import OUTCOME_LABELS

SCHEME = "99CXR"
SCHEME_NAME = "cxr chest X-ray classifier concepts"
MANUFACTURER = "cxr (research software)"

_STANDARD_FINDINGS = {
    "Cardiomegaly": codes.SCT.Cardiomegaly,
    "Pleural Effusion": codes.SCT.PleuralEffusion,
    "Pneumothorax": codes.SCT.Pneumothorax,
    "Edema": codes.SCT.PulmonaryEdema,
    "Nodule": codes.SCT.Nodule,
    "Mass": codes.SCT.Mass,
    "Fibrosis": codes.SCT.Fibrosis,
    "Normal": codes.SCT.Normal,
}

PROBABILITY = CodedConcept.from_code(codes.DCM.Probability)
THRESHOLD = CodedConcept.from_code(codes.DCM.ThresholdValue)
NO_UNITS = CodedConcept.from_code(codes.UCUM.NoUnits)
YES = CodedConcept.from_code(codes.SCT.Yes)
NO = CodedConcept.from_code(codes.SCT.No)
COMMENT = CodedConcept.from_code(codes.DCM.Comment)
ANY_FINDING = CodedConcept.from_code(codes.SCT.Finding)
AI_FAMILY = CodedConcept.from_code(codes.DCM.ArtificialIntelligence)
LUNG = CodedConcept.from_code(codes.SCT.Lung)
ANATOMICAL_STRUCTURE = CodedConcept.from_code(codes.SCT.AnatomicalStructure)
PLAIN_CHEST_XRAY = CodedConcept(
    value="399208008", scheme_designator="SCT", meaning="Plain chest X-ray"
)
QUALITATIVE_EVALUATIONS = CodedConcept(
    value="C0034375", scheme_designator="UMLS", meaning="Qualitative Evaluations"
)
CALLED = CodedConcept(value="CALLED", scheme_designator=SCHEME, meaning="Called at the threshold")
GATE_OUTCOME = CodedConcept(value="GATE", scheme_designator=SCHEME, meaning="Input gate outcome")


def _code_value(name: str) -> str:
    """A class name as a Code Value (SH: at most 16 characters, no backslash)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()[:16] or "CLASS"


def finding_code(name: str) -> CodedConcept:
    """The coded concept of a finding class (standard when DICOM has it, see the module docstring)."""
    standard = _STANDARD_FINDINGS.get(name)
    if standard is not None:
        return CodedConcept.from_code(standard)
    return CodedConcept(value=_code_value(name), scheme_designator=SCHEME, meaning=name[:64])


def outcome_code(outcome: str) -> CodedConcept:
    """The coded value of an input-gate outcome (``scored``, ``out_of_domain``, ...)."""
    return CodedConcept(
        value=outcome.upper(), scheme_designator=SCHEME, meaning=OUTCOME_LABELS[outcome]
    )


def scheme_identification() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification item that declares ``99CXR`` in each of our objects."""
    return CodingSchemeIdentificationItem(
        designator=SCHEME, name=SCHEME_NAME, responsible_organization=MANUFACTURER
    )
