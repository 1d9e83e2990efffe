"""The worklist's rows: calls at the thresholds in force, critical flags, order and filters.

Order: films with a critical finding first, then by abnormality score (the largest probability
of a disease finding, as on the Predict page), highest first; films the input gate kept from
being called (out of domain) come after the scored ones, then refused and unreadable films,
which the model cannot triage at all and which a reader must not take for "normal".

A critical finding (default: Pneumothorax, the one chest X-ray finding every triage product
flags) is flagged when its probability reaches the model card's own threshold, whatever
threshold set a user views, and only on films whose outcome allows calls.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxr_core.inference.findings import NORMAL_CLASSES
from cxr_core.inference.outcome import GateVerdict
from cxr_core.inference.predictor import Predictor
from cxr_core.reporting.outcome import (
    OUT_OF_DOMAIN,
    OUTCOMES,
    REFUSED,
    SCORED,
    UNREADABLE,
    GateOutcome,
    outcome_of,
)
from cxr_core.reporting.study import FindingCall, finding_calls
from cxr_core.triage.job import WorklistEntry

CRITICAL_FINDINGS = ("Pneumothorax",)
_OUTCOME_ORDER = {SCORED: 0, OUT_OF_DOMAIN: 1, REFUSED: 2, UNREADABLE: 3}
COLUMNS = (
    "rank",
    "critical",
    "abnormality",
    "top finding",
    "film",
    "patient",
    "date",
    "called",
    "outcome",
    "note",
)


@dataclass(frozen=True)
class TriageRow:
    """One film of the worklist, ready to show and sort."""

    key: str
    name: str
    outcome: GateOutcome
    findings: tuple[FindingCall, ...]
    critical: tuple[str, ...]
    patient_id: str = ""
    study_date: str = ""

    @property
    def called(self) -> tuple[str, ...]:
        found = [f for f in self.findings if f.called and f.name not in NORMAL_CLASSES]
        return tuple(f.name for f in sorted(found, key=lambda f: -f.probability))

    @property
    def abnormality(self) -> float | None:
        disease = [f for f in self.findings if f.name not in NORMAL_CLASSES]
        return max(f.probability for f in disease) if disease else None

    @property
    def top_finding(self) -> str:
        disease = [f for f in self.findings if f.name not in NORMAL_CLASSES]
        return max(disease, key=lambda f: f.probability).name if disease else ""

    def sort_key(self) -> tuple:
        return (
            not self.critical,
            _OUTCOME_ORDER[self.outcome.outcome],
            -(self.abnormality if self.abnormality is not None else -1.0),
            self.name,
        )


def triage_row(
    entry: WorklistEntry,
    predictor: Predictor,
    thresholds: Mapping[str, float],
    card_thresholds: Mapping[str, float],
    critical: Sequence[str] = CRITICAL_FINDINGS,
) -> TriageRow:
    """One entry's row: its outcome, its calls at ``thresholds``, its critical findings."""
    score = entry.score
    outcome = outcome_of(None, error=score.error, readable=score.readable)
    findings: tuple[FindingCall, ...] = ()
    flagged: tuple[str, ...] = ()
    if score.outcome:  # the Predictor judged the film: its outcome, calls at ``thresholds``
        verdict = GateVerdict(score.outcome, score.reason, tuple(score.warnings))
        row = np.array(
            [[score.probabilities.get(c, np.nan) for c in predictor.classes]], dtype=np.float64
        )
        used = predictor.resolve_thresholds(dict(thresholds))
        prediction = predictor.to_predictions(row, [entry.item.name], used, [verdict])[0]
        outcome = outcome_of(prediction)
        findings = finding_calls(prediction, outcome, multilabel=predictor.label_space.multilabel)
        flagged = tuple(
            c
            for c in critical
            if outcome.calls_allowed
            and c in score.probabilities
            and score.probabilities[c] >= card_thresholds.get(c, np.inf)
        )
    return TriageRow(
        key=entry.item.key,
        name=entry.item.name,
        outcome=outcome,
        findings=findings,
        critical=flagged,
        patient_id=entry.item.patient_id or score.header.get("patient_id", ""),
        study_date=entry.item.study_date or score.header.get("study_date", ""),
    )


def triage_rows(
    entries: Iterable[WorklistEntry],
    predictor: Predictor,
    thresholds: Mapping[str, float],
    card_thresholds: Mapping[str, float],
    critical: Sequence[str] = CRITICAL_FINDINGS,
) -> list[TriageRow]:
    """Every entry's row, in worklist order (see the module docstring)."""
    rows = [triage_row(e, predictor, thresholds, card_thresholds, critical) for e in entries]
    return sorted(rows, key=TriageRow.sort_key)


def filter_rows(
    rows: Sequence[TriageRow],
    *,
    findings: Sequence[str] = (),
    outcomes: Sequence[str] = OUTCOMES,
) -> list[TriageRow]:
    """Rows whose outcome is one of ``outcomes`` and that call every one of ``findings``."""
    wanted = set(findings)
    return [r for r in rows if r.outcome.outcome in outcomes and wanted <= set(r.called)]


def triage_frame(rows: Sequence[TriageRow]) -> pd.DataFrame:
    """The rows as the worklist table (:data:`COLUMNS`; ``key`` kept as the index)."""
    records = [
        {
            "rank": i + 1,
            "critical": ", ".join(r.critical),
            "film": r.name,
            "patient": r.patient_id,
            "date": r.study_date,
            "abnormality": r.abnormality,
            "top finding": r.top_finding,
            "called": ", ".join(r.called),
            "outcome": r.outcome.outcome,
            "note": r.outcome.reason,
        }
        for i, r in enumerate(rows)
    ]
    return pd.DataFrame(records, columns=list(COLUMNS), index=[r.key for r in rows])
