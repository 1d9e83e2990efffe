"""The evaluation report as typed records, and its one JSON form.

:func:`cxr_core.metrics.evaluation_report` returns an :class:`EvaluationReport`;
:mod:`cxr_core.evaluation.run` adds where the thresholds came from, the out-of-fold operating
point, the calibration change, subgroups and the model card's headline. ``report.json`` is
:meth:`EvaluationReport.to_json` and is read back by :meth:`EvaluationReport.from_json`: the
only place a report becomes text or text becomes a report.

Every field holds a JSON value (a metric that is undefined, NaN in numpy, is ``None``; an
interval is ``[low, high]``), so a report survives the round trip exactly. Reports written
before a field existed read with that field at its default (``None`` or empty), so old
``report.json`` files still open; keys this version does not know are ignored.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, Union, get_args, get_origin, get_type_hints

from cxr_core.errors import MetricInputError

Interval = list
"""``[low, high]`` of a percentile interval; either end is None when undefined."""
OPTIONAL = {"optional": True}
"""Field metadata: a field left out of the JSON form when None (a section the report does not have)."""


@dataclass
class ClassMetrics:
    """One class: discrimination, the operating point's metrics and counts, intervals, label counts.

    Multiclass rows are one-vs-rest of the argmax (``threshold`` and ``accuracy`` are None: the
    model calls its most probable class and has one accuracy, :attr:`MulticlassSummary.accuracy`).
    ``n_undecided`` counts known-label cases a cross-fitted threshold could not judge.
    """

    auroc: float | None = None
    ap: float | None = None
    threshold: float | None = None
    brier: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    f1: float | None = None
    accuracy: float | None = None
    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    auroc_ci: Interval | None = None
    ap_ci: Interval | None = None
    sensitivity_ci: Interval | None = None
    specificity_ci: Interval | None = None
    ppv_ci: Interval | None = None
    npv_ci: Interval | None = None
    f1_ci: Interval | None = None
    brier_ci: Interval | None = None
    bootstrap_resamples_used: dict[str, int] | None = None
    n_pos: int = 0
    n_neg: int = 0
    n_unknown: int = 0
    low_count: bool = False
    n_undecided: int | None = field(default=None, metadata=OPTIONAL)


@dataclass
class PooledMetrics:
    """The metrics both averages over classes report (macro: mean of per-class values; micro:
    computed on every decision pooled)."""

    auroc: float | None = None
    ap: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    f1: float | None = None
    accuracy: float | None = None


@dataclass
class MacroAverages(PooledMetrics):
    """Unweighted means over the classes with enough positives and negatives (the others listed)."""

    brier: float | None = None
    classes_included: list[str] = field(default_factory=list)
    classes_excluded: list[str] = field(default_factory=list)
    exclusion_rule: str = ""


@dataclass
class MicroAverages(PooledMetrics):
    """Every decision pooled over classes; ``n_labels`` known labels entered."""

    tp: int | None = None
    fp: int | None = None
    tn: int | None = None
    fn: int | None = None
    n_labels: int | None = None


@dataclass
class ReportSettings:
    thresholds: str = ""
    n_boot: int = 0
    seed: int = 0
    alpha: float = 0.05
    ci_method: str = "percentile bootstrap"
    bootstrap_unit: str = "image"
    min_positives: int = 10
    n_bins: int = 10


@dataclass
class ReliabilityBins:
    bin_lower: list[float] = field(default_factory=list)
    bin_upper: list[float] = field(default_factory=list)
    bin_mid: list[float] = field(default_factory=list)
    mean_pred: list[float | None] = field(default_factory=list)
    frac_pos: list[float | None] = field(default_factory=list)
    count: list[int] = field(default_factory=list)


@dataclass
class ClassCalibration:
    ece: float | None = None
    brier: float | None = None
    bins: ReliabilityBins = field(default_factory=ReliabilityBins)


@dataclass
class RocCurve:
    """False/true positive rates at each (down-sampled) threshold; the first threshold is +inf (None)."""

    fpr: list[float | None] = field(default_factory=list)
    tpr: list[float | None] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)


@dataclass
class PrCurve:
    precision: list[float | None] = field(default_factory=list)
    recall: list[float | None] = field(default_factory=list)
    thresholds: list[float | None] = field(default_factory=list)


@dataclass
class ClassCurves:
    roc: RocCurve = field(default_factory=RocCurve)
    pr: PrCurve = field(default_factory=PrCurve)


@dataclass
class MulticlassSummary:
    """The argmax decisions of a multiclass model: its confusion matrix and one accuracy."""

    prediction_rule: str = "argmax"
    n_cases: int = 0
    n_unknown: int = 0
    confusion_matrix: list[list[int]] = field(default_factory=list)
    confusion_matrix_axes: str = ""
    accuracy: float | None = None
    balanced_accuracy: float | None = None


@dataclass
class OperatingPointClass:
    """One class's cross-fitted operating point: final and per-fold thresholds, out-of-fold metrics."""

    threshold: float | None = None
    fold_thresholds: list[float | None] = field(default_factory=list)
    sensitivity: float | None = None
    specificity: float | None = None
    ppv: float | None = None
    npv: float | None = None
    f1: float | None = None
    accuracy: float | None = None
    tp: float | None = None
    fp: float | None = None
    tn: float | None = None
    fn: float | None = None
    sensitivity_ci: Interval | None = None
    specificity_ci: Interval | None = None
    ppv_ci: Interval | None = None
    npv_ci: Interval | None = None
    f1_ci: Interval | None = None
    accuracy_ci: Interval | None = None
    n_undecided: int = 0


@dataclass
class OperatingPoint:
    rule: str = ""
    source: str = ""
    n_folds: int = 0
    per_class: dict[str, OperatingPointClass] = field(default_factory=dict)


@dataclass
class ClassCalibrationChange:
    ece_before: float | None = None
    ece_after: float | None = None
    brier_before: float | None = None
    brier_after: float | None = None
    bins_before: ReliabilityBins | None = None
    bins_after: ReliabilityBins | None = None


@dataclass
class CalibrationSummary:
    ece: float | None = None
    brier: float | None = None


@dataclass
class CalibrationMacro:
    before: CalibrationSummary = field(default_factory=CalibrationSummary)
    after: CalibrationSummary = field(default_factory=CalibrationSummary)


@dataclass
class CalibrationChange:
    """ECE and Brier before and after temperature scaling; ``source`` says whether "after" is out of fold."""

    method: str = "none"
    temperature: list[float] | None = None
    source: str = ""
    per_class: dict[str, ClassCalibrationChange] = field(default_factory=dict)
    macro: CalibrationMacro = field(default_factory=CalibrationMacro)


@dataclass
class SubgroupClass:
    """One class in one subgroup: statistics with intervals and the gap to the overall figure.

    For each of ``auroc``, ``sensitivity``, ``specificity``: the value, ``<stat>_ci``,
    ``<stat>_gap`` (subgroup minus overall), ``<stat>_gap_ci`` and ``<stat>_gap_flag`` (the
    gap's interval excludes zero).
    """

    n_pos: int = 0
    n_neg: int = 0
    low_count: bool = False
    auroc: float | None = None
    auroc_ci: Interval | None = None
    auroc_gap: float | None = None
    auroc_gap_ci: Interval | None = None
    auroc_gap_flag: bool = False
    sensitivity: float | None = None
    sensitivity_ci: Interval | None = None
    sensitivity_gap: float | None = None
    sensitivity_gap_ci: Interval | None = None
    sensitivity_gap_flag: bool = False
    specificity: float | None = None
    specificity_ci: Interval | None = None
    specificity_gap: float | None = None
    specificity_gap_ci: Interval | None = None
    specificity_gap_flag: bool = False


@dataclass
class SubgroupOverallClass:
    """One class over every case: the reference the subgroup gaps are taken from."""

    threshold: float | None = None
    auroc: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    auroc_ci: Interval | None = None
    sensitivity_ci: Interval | None = None
    specificity_ci: Interval | None = None


@dataclass
class SubgroupOverall:
    n: int = 0
    n_patients: int = 0
    per_class: dict[str, SubgroupOverallClass] = field(default_factory=dict)


@dataclass
class SubgroupGroup:
    n: int = 0
    n_patients: int = 0
    per_class: dict[str, SubgroupClass] = field(default_factory=dict)


@dataclass
class SubgroupReport:
    """:func:`cxr_core.metrics.subgroup_report` for one key (view, sex, age band, ...)."""

    key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    overall: SubgroupOverall = field(default_factory=SubgroupOverall)
    subgroups: dict[str, SubgroupGroup] = field(default_factory=dict)


@dataclass
class SubgroupSection:
    keys: list[str] = field(default_factory=list)
    by: dict[str, SubgroupReport] = field(default_factory=dict)
    note: str = ""


@dataclass
class EvaluationReport:
    """Everything about one model on one split (see the module docstring for the JSON form).

    The core comes from :func:`~cxr_core.metrics.evaluation_report`; ``thresholds_from`` to
    ``label_mapping`` are added by :mod:`cxr_core.evaluation.run` and are None (or empty)
    otherwise. ``headline`` is the model card's validation block, ``evaluation`` what was
    evaluated (checkpoint, split, data), ``label_mapping`` the classes model and data share.
    """

    task: str
    class_names: list[str]
    n_cases: int
    per_class: dict[str, ClassMetrics]
    settings: ReportSettings = field(default_factory=ReportSettings)
    macro: MacroAverages = field(default_factory=MacroAverages)
    micro: MicroAverages = field(default_factory=MicroAverages)
    calibration: dict[str, ClassCalibration] = field(default_factory=dict)
    curves: dict[str, ClassCurves] = field(default_factory=dict)
    multiclass: MulticlassSummary | None = field(default=None, metadata=OPTIONAL)
    operating_point: OperatingPoint | None = field(default=None, metadata=OPTIONAL)
    thresholds_from: str = ""
    threshold_rule: str = ""
    calibration_change: CalibrationChange | None = field(default=None, metadata=OPTIONAL)
    subgroups: SubgroupSection | None = field(default=None, metadata=OPTIONAL)
    headline: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    evaluation: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    label_mapping: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)

    @property
    def multilabel(self) -> bool:
        return self.task == "multilabel"

    @property
    def crossfitted(self) -> bool:
        """True when the operating-point metrics are out of fold (thresholds cross-fitted on these cases)."""
        return ":crossfit-" in self.thresholds_from

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; sections this report does not have are left out."""
        return plain(self)

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """A report from its JSON form (this version's or an older one)."""
        return _record(cls, data, "the report")

    @classmethod
    def from_json(cls, text: str) -> EvaluationReport:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MetricInputError(f"the report is not valid JSON ({exc})") from None
        return cls.from_dict(data)


def plain(value: Any) -> Any:
    """A record (or container of records) as plain JSON values; optional fields that are None left out."""
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in fields(value)
            if not (f.metadata.get("optional") and getattr(value, f.name) is None)
        }
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` (JSON) as the type ``hint`` names: records and dicts of records are built, the rest kept."""
    if value is None:
        return None
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if is_dataclass(hint):
        return _record(hint, value, where)
    if origin is dict:
        _, inner = get_args(hint)
        if not isinstance(value, Mapping):
            raise MetricInputError(f"{where} should be an object, not {type(value).__name__}")
        return {str(k): _convert(inner, v, f"{where}[{k!r}]") for k, v in value.items()}
    return value


def record_from_dict(cls: type, data: Any, where: str = "the record") -> Any:
    """Any of this module's records from its JSON form (missing fields at their defaults)."""
    return _record(cls, data, where)


def _record(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise MetricInputError(f"{where} should be an object, not {type(data).__name__}")
    hints = _hints(cls)
    given = {
        f.name: _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        for f in fields(cls)
        if f.name in data
    }
    try:
        return cls(**given)
    except TypeError as exc:
        missing = [
            f.name
            for f in fields(cls)
            if f.name not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        raise MetricInputError(
            f"{where} is incomplete (missing {', '.join(missing) or 'fields'}): {exc}"
        ) from None
