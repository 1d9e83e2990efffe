"""Classes whose calls a reader should not act on: the model card's own warnings, one sentence each.

A card validated on a few hundred images holds classes with a handful of positives (NIH's
Hernia: 7 validation positives). Their operating threshold sits on a few scores, so a "positive"
call of such a class is mostly noise, yet drawn in red it reads like any other finding.
:func:`flagged_classes` collects what the card already says about each class:

- *low count*: left out of the macro averages for too few known positives or negatives
  (``validation.macro_classes_excluded``, the evaluation report's rule);
- *no fitted threshold*: the threshold rule could not be applied and a fallback was used
  (``validation.threshold_fallback_classes``);
- *no better than chance*: the 95% confidence interval of its validation AUROC reaches 0.5.

The findings summary shows these classes apart and never calls them
(:func:`cxr_core.inference.findings.summarise_findings`, ``flagged=``).
"""

from __future__ import annotations

from collections.abc import Mapping

from cxr_core.models.card import ModelCard

CHANCE_AUROC = 0.5


def _count_text(entry: Mapping) -> str:
    n_pos, n_neg = entry.get("n_pos"), entry.get("n_neg")
    if n_pos is None or n_neg is None:
        return "too few validation cases"
    return f"{int(n_pos)} validation positives, {int(n_neg)} negatives"


def flagged_classes(card: ModelCard) -> dict[str, str]:
    """{class: why its calls are not trusted} for the card's flagged classes (empty when none).

    Only multilabel cards flag classes: a multiclass model's call is its most probable class,
    with no per-class threshold to distrust.
    """
    if not card.get_label_space().multilabel:
        return {}
    validation = card.validation or {}
    per_class = validation.get("per_class", {}) or {}
    low = set(validation.get("macro_classes_excluded", []) or [])
    fallback = set(validation.get("threshold_fallback_classes", []) or [])
    flags: dict[str, str] = {}
    for name in card.classes:
        entry = per_class.get(name, {}) or {}
        reasons = []
        if name in low:
            reasons.append(f"low count ({_count_text(entry)})")
        if name in fallback:
            reasons.append("no threshold could be fitted on validation (a fallback is used)")
        ci = entry.get("auroc_ci") or [None, None]
        if ci[0] is not None and float(ci[0]) <= CHANCE_AUROC:
            reasons.append(
                f"validation AUROC {float(entry.get('auroc', float('nan'))):.2f} "
                f"(95% CI {float(ci[0]):.2f}–{float(ci[1]):.2f}) is not clearly better than chance"
            )
        if reasons:
            flags[name] = "; ".join(reasons)
    return flags
