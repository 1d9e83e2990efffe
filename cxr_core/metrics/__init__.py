"""Plain numpy metrics over (cases x classes) arrays; NaN labels mean unknown for that class.

See the module docstrings for conventions: ``ranking`` (AUROC, AP, curves), ``confusion``
(counts at thresholds or for given decisions, multiclass matrices), ``thresholds`` (choosing
operating points, threshold specs), ``crossfit`` (out-of-sample operating points),
``bootstrap`` (patient-level intervals), ``calibration`` (ECE, Brier), ``temperature``
(temperature scaling), ``subgroups`` (per-subgroup metrics and gaps), ``report`` (the
evaluation report), ``report_types`` (its typed form and JSON) and ``report_text``.
"""

from cxr_core.metrics._inputs import MetricInputError
from cxr_core.metrics.bootstrap import (
    STATISTICS,
    BootstrapCI,
    bootstrap_ci,
    bootstrap_cis,
    resample_weights,
)
from cxr_core.metrics.calibration import (
    BIN_STRATEGIES,
    brier_score,
    expected_calibration_error,
    reliability_bins,
)
from cxr_core.metrics.confusion import (
    METRIC_NAMES,
    SortedScores,
    argmax_decisions,
    balanced_accuracy,
    confusion_counts,
    confusion_matrix,
    decision_counts,
    threshold_metrics,
)
from cxr_core.metrics.crossfit import (
    CrossFitThresholds,
    crossfit_thresholds,
    patient_folds,
)
from cxr_core.metrics.curve_bands import ClassBands, CurveBand, curve_bands
from cxr_core.metrics.ranking import (
    average_precision,
    curves,
    pr_curve,
    ranking_metrics,
    roc_auc,
    roc_curve,
)
from cxr_core.metrics.report import (
    DEFAULT_THRESHOLD,
    MIN_POSITIVES,
    evaluation_report,
    to_jsonable,
)
from cxr_core.metrics.report_text import format_report
from cxr_core.metrics.report_types import (
    CalibrationChange,
    ClassMetrics,
    EvaluationReport,
    OperatingPoint,
    SubgroupReport,
    SubgroupSection,
)
from cxr_core.metrics.subgroups import (
    AGE_BANDS,
    SUBGROUP_STATISTICS,
    age_band,
    subgroup_report,
    subgroup_report_from_predictions,
)
from cxr_core.metrics.temperature import (
    TEMPERATURE_BOUNDS,
    CrossFitTemperature,
    apply_temperature,
    calibration_change,
    crossfit_temperature,
    fit_temperature,
    to_logits,
)
from cxr_core.metrics.thresholds import (
    EDGE_MARGIN,
    FIXED,
    MAX_F1,
    METHOD_LABELS,
    SENSITIVITY,
    SPECIFICITY,
    THRESHOLD_METHODS,
    YOUDEN,
    ThresholdSpec,
    parse_threshold_spec,
    select_thresholds,
)

__all__ = [
    "AGE_BANDS",
    "BIN_STRATEGIES",
    "BootstrapCI",
    "CalibrationChange",
    "ClassBands",
    "ClassMetrics",
    "CrossFitTemperature",
    "CrossFitThresholds",
    "CurveBand",
    "DEFAULT_THRESHOLD",
    "EDGE_MARGIN",
    "EvaluationReport",
    "FIXED",
    "MAX_F1",
    "METHOD_LABELS",
    "METRIC_NAMES",
    "MIN_POSITIVES",
    "MetricInputError",
    "OperatingPoint",
    "SENSITIVITY",
    "SPECIFICITY",
    "STATISTICS",
    "SUBGROUP_STATISTICS",
    "SubgroupReport",
    "SubgroupSection",
    "SortedScores",
    "TEMPERATURE_BOUNDS",
    "THRESHOLD_METHODS",
    "ThresholdSpec",
    "YOUDEN",
    "age_band",
    "apply_temperature",
    "argmax_decisions",
    "average_precision",
    "balanced_accuracy",
    "bootstrap_ci",
    "bootstrap_cis",
    "brier_score",
    "calibration_change",
    "confusion_counts",
    "confusion_matrix",
    "crossfit_temperature",
    "crossfit_thresholds",
    "curve_bands",
    "curves",
    "decision_counts",
    "evaluation_report",
    "expected_calibration_error",
    "fit_temperature",
    "format_report",
    "parse_threshold_spec",
    "patient_folds",
    "pr_curve",
    "ranking_metrics",
    "reliability_bins",
    "resample_weights",
    "roc_auc",
    "roc_curve",
    "select_thresholds",
    "subgroup_report",
    "subgroup_report_from_predictions",
    "threshold_metrics",
    "to_jsonable",
    "to_logits",
]
