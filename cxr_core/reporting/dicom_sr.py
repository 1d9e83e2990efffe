"""The findings of one film as a DICOM Comprehensive 3D SR, TID 1500 Measurement Report.

One measurement group (TID 1501) per class of the model, each referencing the film and holding:
the probability and the decision threshold (NUM, both with an exact 64-bit Floating Point
Value beside the Decimal String), whether it is called at that threshold (Yes / No), the input
gate's outcome, and the algorithm (model name, version, weights SHA-256, threshold source). The
report's Qualitative Evaluations container holds the gate outcome and, as text, the disclaimer
("not for diagnosis"), the gate's reason and warnings, the thresholds' source and the model.
A refused or unreadable film has no probabilities: one group carries its gate outcome alone.
The document is marked unverified and preliminary, and its content qualification RESEARCH.
"""

from __future__ import annotations

import highdicom as hd
from highdicom.sr import (
    AlgorithmIdentification,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    QualitativeEvaluation,
    SourceImageForMeasurementGroup,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from cxr_core.reporting import codes
from cxr_core.reporting.codes import MANUFACTURER
from cxr_core.reporting.dicom_source import (
    SERIES_NUMBERS,
    derived_uid,
    instance_number,
    result_uid,
    series_uid,
)
from cxr_core.reporting.outcome import OUTCOME_LABELS
from cxr_core.reporting.study import FindingCall, StudyResult

DISCLAIMER = (
    "Research software, not a medical device: NOT FOR DIAGNOSIS. These are the outputs of a "
    "machine-learning model and must be checked by a qualified reader."
)
SERIES_DESCRIPTION = "cxr AI findings - research, not for diagnosis"


def algorithm(result: StudyResult) -> AlgorithmIdentification:
    """TID 4019: the model by name and version, with its weights checksum and thresholds."""
    return AlgorithmIdentification(
        name=result.model.name[:64],
        version=result.model.version[:64],
        family=codes.AI_FAMILY,
        parameters=[
            f"weights SHA-256 {result.model.weights_sha256}",
            f"thresholds: {result.thresholds.describe()}",
        ],
    )


def _finding_group(
    finding: FindingCall, result: StudyResult, source: Dataset
) -> MeasurementsAndQualitativeEvaluations:
    algo = algorithm(result)
    measurements = [
        Measurement(
            name=codes.PROBABILITY,
            value=float(finding.probability),
            unit=codes.NO_UNITS,
            algorithm_id=algo,
        )
    ]
    if finding.threshold is not None:
        measurements.append(
            Measurement(name=codes.THRESHOLD, value=float(finding.threshold), unit=codes.NO_UNITS)
        )
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(finding.name, source, result),
        finding_type=codes.finding_code(finding.name),
        algorithm_id=algo,
        measurements=measurements,
        qualitative_evaluations=[
            QualitativeEvaluation(
                name=codes.CALLED, value=codes.YES if finding.called else codes.NO
            ),
            QualitativeEvaluation(
                name=codes.GATE_OUTCOME, value=codes.outcome_code(result.outcome.outcome)
            ),
        ],
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _outcome_group(result: StudyResult, source: Dataset) -> MeasurementsAndQualitativeEvaluations:
    """The one group of a film without probabilities: which film, which model, which outcome."""
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking("input gate", source, result),
        finding_type=codes.ANY_FINDING,
        algorithm_id=algorithm(result),
        qualitative_evaluations=[
            QualitativeEvaluation(
                name=codes.GATE_OUTCOME, value=codes.outcome_code(result.outcome.outcome)
            )
        ],
        source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
    )


def _tracking(label: str, source: Dataset, result: StudyResult) -> TrackingIdentifier:
    uid = derived_uid(result_uid(source, result, "sr"), "tracking", label)
    return TrackingIdentifier(identifier=label[:64], uid=uid)


def gate_texts(result: StudyResult) -> list[str]:
    """What the input gate decided and why, one statement each (the SR's and the PDF's words)."""
    outcome = result.outcome
    texts = [f"Input gate: {OUTCOME_LABELS[outcome.outcome]}."]
    if outcome.reason:
        texts.append(outcome.reason)
    texts += [w for w in outcome.warnings if w != outcome.reason]
    if outcome.scored_anyway:
        texts.append("The user chose to score this film anyway.")
    return texts


def report_texts(result: StudyResult) -> list[str]:
    """The free-text statements of the SR, in reading order."""
    return [
        DISCLAIMER,
        *gate_texts(result),
        f"Thresholds: {result.thresholds.describe()}.",
        f"Model {result.model.name}, version {result.model.version}, "
        f"weights SHA-256 {result.model.weights_sha256}.",
    ]


def _evaluations(result: StudyResult) -> ContainerContentItem:
    """TID 1500's Qualitative Evaluations container: gate outcome (coded) and the report's texts."""
    container = ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS, relationship_type="CONTAINS"
    )
    container.ContentSequence = ContentSequence(
        [
            QualitativeEvaluation(
                name=codes.GATE_OUTCOME, value=codes.outcome_code(result.outcome.outcome)
            )[0],
            *(
                TextContentItem(name=codes.COMMENT, value=text, relationship_type="CONTAINS")
                for text in report_texts(result)
            ),
        ]
    )
    return container


def _observation_context(result: StudyResult, source: Dataset) -> ObservationContext:
    device = DeviceObserverIdentifyingAttributes(
        uid=derived_uid(result.model.weights_sha256, "device"),
        name="cxr",
        manufacturer_name=MANUFACTURER,
        model_name=result.model.name[:64],
        serial_number=result.model.weights_sha256[:64],
    )
    return ObservationContext(
        observer_device_context=ObserverContext(
            observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device
        )
    )


def build_sr(result: StudyResult, source: Dataset) -> Comprehensive3DSR:
    """The SR of one film's result, in the film's study (``source``: its header)."""
    groups = (
        [_finding_group(f, result, source) for f in result.findings]
        if result.findings
        else [_outcome_group(result, source)]
    )
    report = MeasurementReport(
        observation_context=_observation_context(result, source),
        procedure_reported=codes.PLAIN_CHEST_XRAY,
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(_evaluations(result))
    return Comprehensive3DSR(
        evidence=[source],
        content=report[0],
        series_instance_uid=series_uid(source, result, "sr"),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=result_uid(source, result, "sr"),
        instance_number=instance_number(source),
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        coding_schemes=[codes.scheme_identification()],
    )
