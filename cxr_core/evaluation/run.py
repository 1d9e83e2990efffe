"""Run a checkpoint over a manifest split and write what the dashboard reads.

``predict_split`` feeds the cached images through ``eval_transform`` of the checkpoint's own
preprocessing (the path the Predictor takes for an uploaded file), so the probability the
dashboard shows for an image equals the one in ``predictions.csv`` (both calibrated with the
card's temperature by :func:`cxr_core.models.tta.calibrate`). For a lung-masked model the
cache holds the lung-masked rows, made by the same masker the Predictor runs
(:func:`cxr_core.artifacts.lung_model.lung_masker_for`), and ``predict_split`` refuses a cache
masked otherwise. ``evaluate_checkpoint``
scores the predictions with :func:`cxr_core.metrics.evaluation_report`, bootstrapping over
patients, and writes ``predictions.csv`` + ``report.json`` atomically. Every operating point
it reports says where its thresholds came from (``thresholds_from``): cross-fitted by patient
on the split itself (``val:crossfit-5``: each case judged by thresholds fitted on other
patients), the model card's (``card``) or a saved set (``set:<name>``). Training ends by
calling :func:`finalise_checkpoint`, which does the same for the best model and writes the
resulting headline numbers into its model card, so the card and ``eval/val/report.json`` can
never disagree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.artifacts.prediction_table import (
    PROB_PREFIX,
    frame_layout,
    frame_rows,
    write_prediction_table,
)
from cxr_core.artifacts.run_dir import (
    PREDICTIONS_FILE,
    REPORT_FILE,
    RunDir,
    prob_column,
    split_arrays,
)
from cxr_core.artifacts.shards import SINGLE_PROCESS, Ranks
from cxr_core.artifacts.thresholds_store import CARD_SET, ThresholdStore
from cxr_core.data.cache import CacheTransform, ImageCache, cache_key, derived_key
from cxr_core.data.formats import load_dataset
from cxr_core.data.labels import ClassMapping, match_classes
from cxr_core.data.manifest import Manifest
from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.errors import ConfigError, DatasetError
from cxr_core.evaluation.chunked import (
    cache_probabilities,
    predict_split_chunked,
    prediction_frame,
    work_dir,
)
from cxr_core.evaluation.operating import ARGMAX, n_folds_for, operating_rule
from cxr_core.metrics import (
    DEFAULT_THRESHOLD,
    MAX_F1,
    METRIC_NAMES,
    CalibrationChange,
    CrossFitThresholds,
    EvaluationReport,
    OperatingPoint,
    SubgroupSection,
    ThresholdSpec,
    age_band,
    bootstrap_cis,
    calibration_change,
    crossfit_temperature,
    evaluation_report,
    fit_temperature,
    format_report,
    parse_threshold_spec,
    reliability_bins,
    select_thresholds,
    subgroup_report,
    threshold_metrics,
    to_jsonable,
)
from cxr_core.metrics.report_types import record_from_dict
from cxr_core.models.card import CALIBRATION_METHOD, ModelCard
from cxr_core.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from cxr_core.models.tta import calibrate
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.device import resolve_device
from cxr_core.utils.memory import release_unused_memory

logger = logging.getLogger(__name__)

# Default operating point of new multilabel models: the lowest threshold keeping specificity
# >= 0.90 per finding. Max-F1 on NIH-like prevalences (1-10 %) sits far down the ROC curve and
# calls ~8 findings on a typical film; a 90 % specificity floor calls about one in ten normal
# films positive per finding. Max-F1 stays available as the saved threshold set "max_f1".
DEFAULT_OPERATING_POINT = "specificity=0.9"
DEFAULT_SUBGROUP_KEYS: tuple[str, ...] = ("view", "sex", "age")
SUBGROUP_ALIASES: dict[str, str] = {
    "view position": "view",
    "view": "view",
    "patient gender": "sex",
    "gender": "sex",
    "sex": "sex",
    "patient age": "age",
    "age": "age",
}
HEADLINE_CLASS_KEYS: tuple[str, ...] = (
    "auroc",
    "auroc_ci",
    "n_pos",
    "n_neg",
    "threshold",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "tp",
    "fp",
    "tn",
    "fn",
)


def class_mapping(card: ModelCard, manifest: Manifest) -> ClassMapping:
    """The classes a model is scored on against a dataset: those the two share by harmonised name.

    A multilabel model trained on other labels (torchxrayvision's 18, CheXpert's 14) is scored
    on the overlap, the rest listed in the report; a multiclass model's softmax only means
    something over its own classes, so there both sides must name the same ones.
    """
    mapping = match_classes(card.classes, manifest.classes, what=f"the {card.architecture} model")
    if not card.get_label_space().multilabel and (mapping.model_only or mapping.data_only):
        raise DatasetError(
            f"the checkpoint predicts {list(card.classes)} but {manifest.source or 'the dataset'} "
            f"is labelled with {list(manifest.classes)}; evaluate a single-label model on data with "
            "the same label space"
        )
    return mapping


def card_on_classes(card: ModelCard, mapping: ClassMapping) -> ModelCard:
    """``card`` restricted to the shared classes, spelt as the dataset spells them, for scoring."""
    if mapping.identical:
        return card
    renamed = dict(mapping.shared)
    calibration = card.calibration
    temperature = card.temperature()
    if (
        temperature is not None and card.get_label_space().multilabel
    ):  # one temperature per class: keep the shared ones
        by_class = dict(zip(card.classes, temperature))
        calibration = {**card.calibration, "temperature": [by_class[m] for m in renamed]}
    return replace(
        card,
        num_classes=len(mapping.shared),
        label_space={**card.label_space, "classes": list(mapping.data_classes)},
        thresholds={renamed[m]: t for m, t in card.thresholds.items() if m in renamed},
        calibration=calibration,
    )


def predict_split(
    checkpoint: Checkpoint | str | Path,
    manifest: Manifest,
    cache: ImageCache,
    *,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    calibrated: bool = True,
) -> pd.DataFrame:
    """One row per manifest row: ids, path, ``label:<class>`` (NaN unknown) and ``prob:<class>``
    for the classes model and data share (:func:`class_mapping`), named as the data names them.

    Probabilities are sigmoid outputs for multilabel models and softmax for multiclass ones,
    averaged over the card's test-time augmentation, scaled by the card's temperature (unless
    ``calibrated=False``) and computed in float32 (no autocast), exactly as the Predictor
    computes them.
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    check_cache_preprocessing(cache, ckpt.preprocess)
    if cache.size != ckpt.preprocess.cache_size:
        raise ConfigError(
            f"the image cache holds {cache.size}px images but the preprocessing expects cache_size="
            f"{ckpt.preprocess.cache_size}; build the cache with size={ckpt.preprocess.cache_size} so "
            "training, evaluation and prediction see identically resized images"
        )
    mapping = class_mapping(ckpt.card, manifest)
    dev = resolve_device(device)
    model = ckpt.build_model().to(dev).eval()
    probs = cache_probabilities(
        model,
        ckpt,
        cache,
        cache.rows_for(manifest),
        batch_size=batch_size,
        device=dev,
        calibrated=calibrated,
        progress=progress,
    )
    return prediction_frame(manifest, mapping, ckpt.card.classes, probs)


def check_cache_preprocessing(cache: ImageCache, preprocess: PreprocessConfig) -> None:
    """Refuse a cache whose rows are not what the model was trained on (lung-masked or not, and how).

    Scoring a lung-masked model on whole images, or the reverse, gives numbers that belong to
    no model; the cache index records the masking it applied (:attr:`ImageCache.transform`).
    """
    wanted = preprocess.lung_mask.identity() if preprocess.lung_mask is not None else ""
    if cache.transform != wanted:

        def said(identity: str) -> str:
            return f"lung-masked images ({identity})" if identity else "whole (unmasked) images"

        raise DatasetError(
            f"the image cache {cache.index_path.name} holds {said(cache.transform)}, but the model was trained on "
            f"{said(wanted)}; build the cache with the model's lung masker "
            "(cxr_core.artifacts.lung_model.lung_masker_for)"
        )


def calibrate_predictions(
    predictions: pd.DataFrame,
    classes: Sequence[str],
    temperature: Sequence[float] | None,
    *,
    multilabel: bool,
) -> pd.DataFrame:
    """A copy of an uncalibrated predictions frame with its ``prob:`` columns temperature-scaled
    (the frame itself when the card has no temperature: at a million rows a copy is 160 MB).

    Goes through :func:`cxr_core.models.tta.calibrate` on the float32 probabilities, the very
    operation the Predictor applies after its forward pass, so the calibrated ``predictions.csv``
    equals what a user gets for the same image.
    """
    if temperature is None:
        return predictions
    out = predictions.copy()
    columns = [prob_column(c) for c in classes]
    raw = torch.from_numpy(np.array(out[columns].to_numpy(dtype=np.float32)))
    out[columns] = calibrate(raw, temperature, multilabel=multilabel).numpy().astype(np.float64)
    return out


def subgroup_values(manifest: Manifest, by: Sequence[str]) -> dict[str, np.ndarray]:
    """Per requested key: one subgroup value per manifest row (ages in :func:`age_band` bands).

    Keys may be manifest columns (``view``, ``sex``, ``age``, ...) or the NIH column names
    (``View Position``, ``Patient Gender``, ``Patient Age``).
    """
    frame = manifest.frame
    out: dict[str, np.ndarray] = {}
    for key in by:
        column = SUBGROUP_ALIASES.get(str(key).strip().lower(), str(key).strip())
        if column not in frame.columns:
            extra = [
                c
                for c in frame.columns
                if c not in ("image_id", "path", "patient_id", "split", *manifest.classes)
            ]
            raise DatasetError(
                f"cannot form subgroups by {key!r}: {manifest.source or 'the dataset'} has no such column "
                f"(it has: {', '.join(extra) or 'none'})"
            )
        values = frame[column].to_numpy(dtype=object)
        out[column] = age_band(values) if column == "age" else values
    return out


def default_subgroups(manifest: Manifest) -> list[str]:
    """The standard subgroup keys (view, sex, age) this manifest has any values for."""
    frame = manifest.frame
    keys = []
    for key in DEFAULT_SUBGROUP_KEYS:
        if key in frame.columns:
            column = frame[key]
            known = column.notna() & (column.astype(str).str.strip() != "")
            if known.any():
                keys.append(key)
    return keys


def headline(
    report: EvaluationReport,
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int,
    seed: int,
) -> dict:
    """The card's validation section: macro AUROC with a patient-level CI, per-class AUROC and counts.

    The macro CI averages, per bootstrap resample, the AUROC of the classes the report's
    macro includes (enough positives and negatives); resamples where one of them is
    undefined are skipped. They are the same resamples as the report's per-class intervals.
    Operating-point metrics are copied from the report, i.e. out of fold when the report's
    thresholds were cross-fitted (``thresholds_from``).
    """
    names = report.class_names
    macro = report.macro
    included = [names.index(c) for c in macro.classes_included]
    macro_ci = None
    if n_boot > 0 and included:
        dist = bootstrap_cis(
            labels[:, included],
            probs[:, included],
            ["auroc"],
            groups=groups,
            n_boot=n_boot,
            seed=seed,
        )["auroc"].distribution
        per_resample = dist[np.isfinite(dist).all(axis=1)].mean(axis=1)
        if per_resample.size:
            alpha = report.settings.alpha
            macro_ci = [
                float(np.quantile(per_resample, alpha / 2)),
                float(np.quantile(per_resample, 1 - alpha / 2)),
            ]
    out = {
        "n_images": report.n_cases,
        "n_patients": int(len(set(groups.tolist()))),
        "macro_auroc": macro.auroc,
        "macro_auroc_ci": macro_ci,
        "macro_classes_included": macro.classes_included,
        "macro_classes_excluded": macro.classes_excluded,
        "macro_exclusion_rule": macro.exclusion_rule,
        "per_class": {
            name: {k: getattr(e, k) for k in HEADLINE_CLASS_KEYS}
            for name, e in report.per_class.items()
        },
        "n_boot": report.settings.n_boot,
        "seed": report.settings.seed,
        "bootstrap_unit": report.settings.bootstrap_unit,
    }
    if report.thresholds_from:
        out["thresholds_from"] = report.thresholds_from
        out["threshold_rule"] = report.threshold_rule
        out.update(
            {
                f"macro_{k}": getattr(macro, k)
                for k in ("sensitivity", "specificity", "ppv", "npv", "f1")
            }
        )
    change = report.calibration_change
    if change is not None:
        out["temperature"] = change.temperature
        out["macro_ece_before"] = change.macro.before.ece
        out["macro_ece_after"] = change.macro.after.ece
        out["macro_brier_before"] = change.macro.before.brier
        out["macro_brier_after"] = change.macro.after.brier
    if report.multiclass is not None:
        out["accuracy"] = report.multiclass.accuracy
        out["balanced_accuracy"] = report.multiclass.balanced_accuracy
    return to_jsonable(out)


def _replace_operating_point(
    report: EvaluationReport, fit: CrossFitThresholds, labels: np.ndarray
) -> None:
    """Per-class, macro and micro threshold metrics of ``report`` -> the out-of-fold ones of ``fit``."""
    for c, name in enumerate(report.class_names):
        entry = report.per_class[name]
        entry.threshold = _json_number(fit.final_thresholds[c])
        for metric in METRIC_NAMES:
            setattr(entry, metric, _json_number(fit.metrics[metric][c]))
        for k in ("tp", "fp", "tn", "fn"):
            value = float(fit.metrics[k][c])
            setattr(entry, k, None if np.isnan(value) else int(round(value)))
        for metric in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            interval = [fit.cis[metric].low[c], fit.cis[metric].high[c]] if fit.cis else None
            setattr(entry, f"{metric}_ci", to_jsonable(interval))
        entry.n_undecided = int(fit.n_undecided[c])
    included = report.macro.classes_included
    for metric in METRIC_NAMES:
        values = np.array(
            [getattr(report.per_class[n], metric) for n in included], dtype=np.float64
        )
        values = values[~np.isnan(values)]
        setattr(report.macro, metric, float(values.mean()) if values.size else None)
    used = ~np.isnan(fit.metrics["tp"])
    pooled = threshold_metrics({k: np.sum(fit.metrics[k][used]) for k in ("tp", "fp", "tn", "fn")})
    for metric in METRIC_NAMES:
        setattr(report.micro, metric, _json_number(pooled[metric]))
    for k in ("tp", "fp", "tn", "fn"):
        setattr(report.micro, k, int(round(float(pooled[k]))))
    report.micro.n_labels = int(np.sum(~np.isnan(labels) & ~np.isnan(fit.case_thresholds)))


def _json_number(value: object) -> float | None:
    """A metric as the report holds it: a float, or None where numpy has NaN."""
    return to_jsonable(float(value))


def _calibration_section(
    labels: np.ndarray,
    raw: np.ndarray,
    calibrated: np.ndarray,
    groups: np.ndarray,
    card: ModelCard,
    split: str,
    *,
    seed: int,
) -> CalibrationChange:
    """ECE and Brier before/after temperature scaling, per class and macro (nan-mean over classes).

    On the split the temperature was fitted on, "after" is out of fold (each case scaled by a
    temperature fitted on other patients); on any other split it is the card's temperature.
    """
    task = card.label_space["task"]
    names = list(card.classes)
    fitted_on = card.calibration.get("fitted_on") if card.calibration else None
    if fitted_on == split:
        fit = crossfit_temperature(
            labels, raw, groups, task, n_folds=n_folds_for(groups), seed=seed, split=split
        )
        before, after, source, after_probs = fit.before, fit.after, fit.source, fit.calibrated
    else:
        change = calibration_change(labels, raw, calibrated)
        before, after, after_probs = change["before"], change["after"], calibrated
        source = "card" if card.calibration else "uncalibrated"
    bins_before, bins_after = reliability_bins(labels, raw), reliability_bins(labels, after_probs)

    def macro(values: dict[str, np.ndarray]) -> dict:
        return {
            k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for k, v in values.items()
        }

    section = to_jsonable(
        {
            "method": CALIBRATION_METHOD if card.calibration else "none",
            "temperature": card.temperature(),
            "source": source,
            "per_class": {
                n: {
                    "ece_before": before["ece"][c],
                    "ece_after": after["ece"][c],
                    "brier_before": before["brier"][c],
                    "brier_after": after["brier"][c],
                    "bins_before": bins_before[c],
                    "bins_after": bins_after[c],
                }
                for c, n in enumerate(names)
            },
            "macro": {"before": macro(before), "after": macro(after)},
        }
    )
    return record_from_dict(CalibrationChange, section, "the calibration section")


def _subgroup_section(
    predictions: pd.DataFrame,
    subgroups: dict[str, np.ndarray] | None,
    thresholds: np.ndarray,
    names: list[str],
    multilabel: bool,
    *,
    n_boot: int,
    seed: int,
) -> SubgroupSection:
    section: dict = {"keys": list(subgroups or {}), "by": {}}
    if not subgroups:
        section["note"] = "no subgroup information (view, sex, age) in this dataset's manifest"
        return record_from_dict(SubgroupSection, section, "the subgroup section")
    if not multilabel:
        section["note"] = (
            "multiclass model: subgroup sensitivity/specificity are left undefined (its calls are the "
            "argmax, not a threshold); AUROC is one-vs-rest"
        )
    else:
        section["note"] = (
            "sensitivity/specificity at the report's thresholds (in sample for the split they were fitted on)"
        )
    labels, probs = split_arrays(predictions, names)
    groups = predictions["patient_id"].astype(str).to_numpy()
    for key, values in subgroups.items():
        section["by"][key] = subgroup_report(
            labels,
            probs,
            values,
            groups,
            thresholds,
            names,
            key=key,
            n_boot=max(n_boot, 1),
            seed=seed,
        )
    return record_from_dict(SubgroupSection, section, "the subgroup section")


def score_predictions(
    predictions: pd.DataFrame,
    card: ModelCard,
    *,
    n_boot: int,
    seed: int,
    thresholds: dict[str, float] | ThresholdSpec | str | None = None,
    thresholds_from: str = "",
    split: str = "val",
    uncalibrated: pd.DataFrame | None = None,
    subgroups: dict[str, np.ndarray] | None = None,
) -> EvaluationReport:
    """Report (with ``headline``, ``calibration_change`` and ``subgroups``) of calibrated predictions.

    ``thresholds``: None = the card's; a dict = those (``thresholds_from`` names them); a
    threshold spec (``"max_f1"``, ``"specificity=0.9"``) = cross-fitted on this split by
    patient (``thresholds_from`` ``"<split>:crossfit-5"``): the per-class sensitivity,
    specificity, PPV, NPV and F1 come from out-of-fold decisions and the reported threshold is
    the one fitted on all cases. ``uncalibrated`` (same rows, before temperature scaling) gives
    the before/after calibration; without it "before" equals "after".
    """
    classes = list(card.classes)
    labels, probs = split_arrays(predictions, classes)
    raw = (
        probs
        if uncalibrated is None or uncalibrated is predictions
        else split_arrays(uncalibrated, classes)[1]
    )
    groups = predictions["patient_id"].astype(str).to_numpy()
    task = card.label_space["task"]
    rule = operating_rule(
        labels,
        probs,
        groups,
        card,
        thresholds,
        thresholds_from=thresholds_from,
        split=split,
        seed=seed,
        n_boot=n_boot,
    )
    report = evaluation_report(
        labels,
        probs,
        classes,
        task,
        thresholds=rule.thresholds,
        groups=groups,
        n_boot=n_boot,
        seed=seed,
    )
    if rule.fit is not None:
        _replace_operating_point(report, rule.fit, labels)
        report.operating_point = record_from_dict(
            OperatingPoint, to_jsonable(rule.fit.to_dict(classes)), "the operating point"
        )
    report.thresholds_from, report.threshold_rule = rule.source, rule.rule
    report.calibration_change = _calibration_section(
        labels, raw, probs, groups, card, split, seed=seed
    )
    t = np.array(
        rule.thresholds if rule.thresholds is not None else [np.nan] * len(classes),
        dtype=np.float64,
    )
    report.subgroups = _subgroup_section(
        predictions, subgroups, t, classes, task == "multilabel", n_boot=n_boot, seed=seed
    )
    report.headline = headline(report, labels, probs, groups, n_boot=n_boot, seed=seed)
    return report


def write_evaluation(
    out_dir: str | Path, predictions: pd.DataFrame, report: EvaluationReport
) -> Path:
    """``predictions.csv`` and ``report.json`` (:meth:`EvaluationReport.to_json`), each written atomically."""
    out_dir = Path(out_dir)
    classes = [
        c.removeprefix(PROB_PREFIX) for c in predictions.columns if c.startswith(PROB_PREFIX)
    ]
    write_prediction_table(
        out_dir / PREDICTIONS_FILE,
        classes,
        frame_rows(predictions, classes),
        extra=(),
        **frame_layout(predictions),
    )
    write_text_atomically(out_dir / REPORT_FILE, report.to_json())
    return out_dir


def finalise_checkpoint(
    best_path: Path,
    card: ModelCard,
    val_manifest: Manifest,
    cache: ImageCache,
    out_dir: Path,
    *,
    n_boot: int,
    seed: int,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    half: bool = False,
    progress: bool = True,
    operating_point: str | None = None,
    subgroups: Sequence[str] | None = None,
) -> EvaluationReport:
    """End of training (and ``cxr card refresh``): evaluate the saved weights on validation,
    calibrate, choose thresholds out of sample, and rewrite the checkpoint with the final card
    (same weights) plus ``eval/val``.

    Order: temperatures are fitted on the uncalibrated validation scores (the card stores the
    fit on all cases; the reported before/after ECE and Brier are out of fold); thresholds by
    ``operating_point`` (default :data:`DEFAULT_OPERATING_POINT` for multilabel models) are
    cross-fitted by patient on the calibrated scores, so the reported sensitivity, specificity,
    PPV, NPV and F1 are out of sample, and the card stores the thresholds fitted on all
    validation cases. A multilabel checkpoint also gets the ``max_f1`` preset threshold set.
    Subgroups default to view/sex/age where the manifest has them.

    The weights are read back from the file, so an fp16-stored model is scored as stored, and
    with the final card's test-time augmentation, so the card's numbers are what users get.
    """
    ckpt = load_checkpoint(best_path)
    card.calibration = {}
    ckpt.card = card
    multilabel = card.get_label_space().multilabel
    raw = predict_split(
        ckpt,
        val_manifest,
        cache,
        batch_size=batch_size,
        device=device,
        progress=progress,
        calibrated=False,
    )
    predictions = _fit_calibration(raw, card)
    spec = parse_threshold_spec(operating_point or DEFAULT_OPERATING_POINT) if multilabel else None
    keys = default_subgroups(val_manifest) if subgroups is None else list(subgroups)
    report = score_predictions(
        predictions,
        card,
        n_boot=n_boot,
        seed=seed,
        thresholds=spec,
        split="val",
        uncalibrated=raw,
        subgroups=subgroup_values(val_manifest, keys),
    )
    _record_validation(card, report, spec)
    report.evaluation = _evaluation_info(best_path, card, "val", val_manifest)
    save_checkpoint(
        best_path, ckpt.state_dict, card, half=half, gate=ckpt.gate
    )  # a re-stamp keeps the input gate
    write_evaluation(out_dir, predictions, report)
    if multilabel:
        _save_max_f1_preset(best_path, card, *split_arrays(predictions, card.classes))
    logger.info("%s", format_report(report))
    return report


def _fit_calibration(raw: pd.DataFrame, card: ModelCard) -> pd.DataFrame:
    """Fit one temperature per class on all validation cases into the card; the calibrated scores."""
    labels, raw_probs = split_arrays(raw, card.classes)
    fitted = fit_temperature(labels, raw_probs, card.label_space["task"])
    temperature = [float(t) if np.isfinite(t) else 1.0 for t in fitted]
    card.calibration = {
        "method": CALIBRATION_METHOD,
        "temperature": temperature,
        "fitted_on": "val",
        "fit": "negative log-likelihood on all validation cases; classes without positives and negatives keep 1.0",
    }
    multilabel = card.get_label_space().multilabel
    return calibrate_predictions(raw, card.classes, temperature, multilabel=multilabel)


def _record_validation(
    card: ModelCard, report: EvaluationReport, spec: ThresholdSpec | None
) -> None:
    """The card's thresholds (multilabel: the operating point's, fitted on all of validation)
    and its validation headline, from the validation report."""
    if card.get_label_space().multilabel:
        final = report.operating_point.per_class
        fallback = [c for c in card.classes if final[c].threshold is None]
        card.thresholds = {c: report.per_class[c].threshold for c in card.classes}
        card.threshold_method = str(spec)
    else:
        fallback = []
        card.thresholds = {}
        card.threshold_method = ARGMAX
    card.validation = {
        "split": "val",
        **report.headline,
        "threshold_method": card.threshold_method,
        "threshold_fallback_classes": fallback,
        "manifest_fingerprint": card.data.get("manifest_fingerprint", ""),
    }


def _save_max_f1_preset(
    checkpoint_path: Path, card: ModelCard, labels: np.ndarray, probs: np.ndarray
) -> None:
    """Max-F1 thresholds on all validation cases (calibrated scores), kept as the named set ``max_f1``."""
    chosen = select_thresholds(labels, probs, MAX_F1)
    values = {
        c: float(np.clip(t, 0.0, 1.0)) if np.isfinite(t) else DEFAULT_THRESHOLD
        for c, t in zip(card.classes, chosen)
    }
    store = ThresholdStore(checkpoint_path.parent, card.classes, card.thresholds)
    store.save(
        MAX_F1,
        values,
        method=MAX_F1,
        notes="maximum F1 per finding on all validation cases (calibrated); calls more findings than the "
        "card's default operating point",
    )


def refresh_card(
    checkpoint_path: str | Path,
    manifest: Manifest,
    *,
    n_boot: int,
    seed: int,
    cache_dir: str | Path = ".cxr_cache",
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    operating_point: str | None = None,
    subgroups: Sequence[str] | None = None,
) -> dict:
    """Re-stamp an existing checkpoint's card without retraining: :func:`finalise_checkpoint` on
    its validation split with its own card and weights (stored dtype kept), writing
    ``eval/val`` next to it."""
    checkpoint_path = Path(checkpoint_path)
    ckpt = load_checkpoint(checkpoint_path)
    if not class_mapping(ckpt.card, manifest).identical:
        raise DatasetError(
            f"the checkpoint predicts {list(ckpt.card.classes)} but {manifest.source or 'the dataset'} is labelled "
            f"with {list(manifest.classes)}; a card is re-stamped on the data it was validated on"
        )
    part = manifest.split("val")
    cache = open_cache_for(
        manifest,
        part,
        cache_dir,
        ckpt.preprocess.cache_size,
        progress=progress,
        transform=lung_masker_for(ckpt.preprocess, device),
    )
    return finalise_checkpoint(
        checkpoint_path,
        ckpt.card,
        part,
        cache,
        RunDir.of_checkpoint(checkpoint_path).eval_dir("val"),
        n_boot=n_boot,
        seed=seed,
        batch_size=batch_size,
        device=device,
        half=ckpt.card.weights_dtype == "float16",
        progress=progress,
        operating_point=operating_point,
        subgroups=subgroups,
    )


def _evaluation_info(
    checkpoint_path: Path, card: ModelCard, split: str, manifest: Manifest
) -> dict:
    return {
        "checkpoint": str(checkpoint_path),
        "architecture": card.architecture,
        "split": split,
        "source": manifest.source,
        "manifest_fingerprint_of_split": manifest.fingerprint(),
        "thresholds": card.thresholds,
        "threshold_method": card.threshold_method,
        "tta": card.tta,
    }


def open_cache_for(
    manifest: Manifest,
    split_manifest: Manifest,
    cache_dir: str | Path,
    size: int,
    *,
    progress: bool = True,
    transform: CacheTransform | None = None,
) -> ImageCache:
    """The training run's cache of the whole manifest when it exists, else a cache of the split alone.

    Evaluating one split must not decode the whole dataset, but when training already did,
    its cache (found by key, see :mod:`cxr_core.data.cache`) is reused. ``transform`` (the
    model's lung masker) selects the cache of the transformed rows.
    """
    key = cache_key(manifest, size)
    if transform is not None:
        key = derived_key(key, transform.identity)
    full_index = Path(cache_dir) / f"cache-{size}px-{key}.json"
    if full_index.is_file():
        try:
            return ImageCache.open(full_index)
        except DatasetError:
            pass  # damaged: fall through and build the split's own cache
    return ImageCache.build(split_manifest, cache_dir, size, progress=progress, transform=transform)


def evaluate_checkpoint(
    checkpoint_path: str | Path,
    manifest: Manifest | str | Path,
    split: str,
    out_dir: str | Path,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cache_dir: str | Path = ".cxr_cache",
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: bool = True,
    thresholds: str | None = None,
    subgroups: Sequence[str] | None = None,
    ranks: Ranks = SINGLE_PROCESS,
) -> EvaluationReport | None:
    """Predict ``split`` of ``manifest``, score it and write the report.

    ``manifest`` may also be a dataset folder or label file, read by its format's adapter with
    the splits the dataset itself defines (a ``test/`` folder, NIH's official test list).
    ``thresholds``: None = as the card was made (cross-fitted again on the card's own
    validation split, which reproduces the card; the card's thresholds on any other split),
    ``"card"``, a threshold spec (cross-fitted on this split) or the name of a threshold set
    saved next to the checkpoint. ``subgroups``: manifest keys (``view``, ``sex``, ``age``).
    ``ranks``: the processes sharing the prediction (:mod:`cxr_core.evaluation.chunked`);
    rank 0 scores and writes and returns the report, the others return None. Predictions an
    interrupted run of the same evaluation left in ``out_dir`` are reused.
    """
    checkpoint_path = Path(checkpoint_path)
    if not isinstance(manifest, Manifest):
        manifest = load_dataset(manifest)
    ckpt = load_checkpoint(checkpoint_path)
    mapping = class_mapping(ckpt.card, manifest)
    card = card_on_classes(ckpt.card, mapping)
    part = manifest.split(split)
    release_unused_memory("reading the labels")
    chosen, source = resolve_operating_point(checkpoint_path, card, split, thresholds)
    groups = subgroup_values(part, subgroups or [])
    raw = predict_split_chunked(
        ckpt,
        checkpoint_path,
        manifest,
        part,
        mapping,
        out_dir,
        cache_dir=cache_dir,
        ranks=ranks,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    if raw is None:  # rank 0 scores
        return None
    release_unused_memory("prediction")
    predictions = calibrate_predictions(
        raw, card.classes, card.temperature(), multilabel=card.get_label_space().multilabel
    )
    report = score_predictions(
        predictions,
        card,
        n_boot=n_boot,
        seed=seed,
        thresholds=chosen,
        thresholds_from=source,
        split=split,
        uncalibrated=raw,
        subgroups=groups,
    )
    report.evaluation = _evaluation_info(checkpoint_path, ckpt.card, split, part)
    report.label_mapping = mapping.to_dict()
    write_evaluation(out_dir, predictions, report)
    work_dir(out_dir).discard()
    return report


def resolve_operating_point(
    checkpoint_path: Path, card: ModelCard, split: str, thresholds: str | None
) -> tuple[dict[str, float] | ThresholdSpec | None, str]:
    """What ``thresholds`` asks for: (None = card's, a spec to cross-fit, or a saved set) and its source name."""
    if not card.get_label_space().multilabel:
        return None, ARGMAX
    validation = card.validation or {}
    crossfitted = str(validation.get("thresholds_from", "")).startswith(
        f"{validation.get('split')}:crossfit"
    )
    if thresholds is None:
        if split == validation.get("split") and crossfitted:
            return parse_threshold_spec(card.threshold_method), ""
        return None, "card"
    if thresholds == CARD_SET:
        return None, "card"
    try:
        return parse_threshold_spec(thresholds), ""
    except ConfigError:
        store = ThresholdStore(checkpoint_path.parent, card.classes, card.thresholds)
        if thresholds not in store.names():
            raise ConfigError(
                f"{thresholds!r} is neither a threshold rule (max_f1, youden, sensitivity=0.9, specificity=0.95, "
                f"fixed=0.5) nor a threshold set saved for this checkpoint ({', '.join(store.names())})"
            ) from None
        return store.load(thresholds).thresholds, f"set:{thresholds}"
