"""Presentation of one reading: findings summary text, the results table, DICOM header fields, the lungs.

Numbers, order and calls come from :mod:`cxr_core.inference.findings`; this module only turns
them into the words and table columns the Predict page shows, so each piece can be tested
without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from cxr_core.inference.findings import (
    BORDERLINE_BAND,
    BORDERLINE_FRACTION,
    NEAR_TIE_MARGIN,
    FindingsSummary,
)
from cxr_core.inference.lungs import LungCheck
from dashboard.tables import human_date

TOP_FINDINGS = 3
BORDERLINE_MARK = "≈"
"""Put before a call that lies within ``BORDERLINE_BAND`` of its threshold."""

BANDS_NOTE = (
    f"{BORDERLINE_MARK} borderline: the probability lies within {BORDERLINE_FRACTION:.0%} of the threshold (at most "
    f"{BORDERLINE_BAND:.2f} either side), so a small "
    f"change of image or threshold could flip the call. Near tie (single-label models): the two most probable "
    f"classes differ by at most {NEAR_TIE_MARGIN:.2f}."
)

INTENSITY_NOTE = (
    "Intensity rule: the stored pixel values are divided by the largest value their bit depth can hold "
    "(255 for 8-bit, 4095 for 12-bit…), for PNG and DICOM alike, unless a DICOM file carries its own window or "
    "VOI LUT, which is then applied; MONOCHROME1 is inverted. The same pixels therefore score the same in "
    "either format."
)

BARS_LEGEND = (
    "Red: called positive · orange: borderline (either side of the threshold) · gray: not called · "
    "black tick: the operating threshold."
)
BARS_LEGEND_MULTICLASS = (
    "One class per image: the most probable one is the call; green: a class stating normal."
)

# (label, metadata key) in display order; identifiers only behind the explicit switch.
DICOM_FIELDS = (
    ("View", "view_position"),
    ("Age", "patient_age"),
    ("Sex", "patient_sex"),
    ("Modality", "modality"),
    ("Body part", "body_part"),
    ("Study date", "study_date"),
)
IDENTIFYING_FIELDS = (("Patient ID", "patient_id"),)


def _finding_text(name: str, probability: float, borderline: bool) -> str:
    return f"{BORDERLINE_MARK if borderline else ''}{name} {probability:.2f}"


def called_text(summary: FindingsSummary, k: int = TOP_FINDINGS) -> str:
    """The calls of one film in a few words: multilabel, the called findings (borderline ones
    marked, at most ``k``); multiclass, the most probable class (near ties said)."""
    if not summary.multilabel:
        top, p = summary.most_probable
        return f"{top} {p:.2f}" + (" · near tie" if summary.near_tie else "")
    if not summary.positives:
        return "none called"
    text = "; ".join(
        _finding_text(f.name, f.probability, f.borderline) for f in summary.positives[:k]
    )
    more = len(summary.positives) - k
    return text + (f"; +{more} more" if more > 0 else "")


def not_trusted_lines(summary: FindingsSummary) -> str:
    """Markdown: each distrusted class's probability, threshold and why it is never called ("" if none)."""
    if not summary.flagged:
        return ""
    return ":gray[**Not trusted, never called:**]  \n" + "  \n".join(
        f":gray[{f.name} {f.probability:.3f}, "
        + ("at or above" if f.above_threshold else "below")
        + f" its threshold {f.threshold:.3f} · {f.flag}]"
        for f in summary.flagged
    )


def not_trusted_text(summary: FindingsSummary) -> str:
    """Distrusted classes at or above their threshold (shown, never called), or ""."""
    return "; ".join(f"{f.name} {f.probability:.2f}" for f in summary.flagged if f.above_threshold)


OUTCOME_LABELS = {
    "scored": "scored",
    "out_of_domain": "out of domain",
    "refused": "refused",
    "unreadable": "unreadable",
    "pending": "scoring…",
}
SCORE_SOURCE = "the highest probability of any trusted finding"
"""Where the abnormality score comes from when its finding is not called (then it is not named)."""
RESULT_COLUMNS = [
    "file",
    "outcome",
    "abnormality",
    "called",
    "borderline",
    "not trusted",
    "warnings",
]


SHORT_WARNING = 70


def short_warning(text: str, name: str = "", limit: int = SHORT_WARNING) -> str:
    """A warning's headline for the batch table: the gate and the decoder write "what: why" (after
    the file's ``name`` and a colon, which the table's row already says), so the part before the
    first colon, else the first sentence; the film's reading view and the CSV carry the whole text."""
    text = text[len(name) + 2 :] if name and text.startswith(f"{name}: ") else text
    head = text.split(": ", 1)[0] if ": " in text else text.split(". ", 1)[0]
    return head if len(head) <= limit else head[: limit - 1].rstrip() + "…"


def _called(reading) -> str:
    """The calls of one film; an out-of-domain film's are withheld unless scored anyway."""
    s = reading.summary
    if s is None:
        return ""
    if s.calls_withheld:
        return "withheld (out of domain)"
    return called_text(s) + (" · scored anyway" if s.scored_anyway else "")


def results_table(readings: Sequence) -> pd.DataFrame:
    """One row per film (:class:`dashboard.predict_batch.FilmReading`): outcome, the numeric
    abnormality score (sortable), the calls, borderline count, distrusted classes above their
    threshold, and the input gate's warnings (a refused or unreadable file: why) by their headlines."""
    rows = []
    for r in readings:
        s = r.summary
        rows.append(
            {
                "file": r.name,
                "outcome": OUTCOME_LABELS.get(r.outcome, r.outcome),
                "abnormality": s.abnormality if s is not None else math.nan,
                "called": _called(r),
                "borderline": len(s.borderline) if s is not None else None,
                "not trusted": not_trusted_text(s) if s is not None else "",
                "warnings": " | ".join(
                    short_warning(w, r.name)
                    for w in (r.warnings if s is not None else [r.reason] if r.reason else [])
                ),
            }
        )
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return frame.astype({"abnormality": "float64", "borderline": "Int64"})


def headline(summary: FindingsSummary) -> str:
    """Markdown line(s) above the findings of one image: the calls, what is borderline, then the
    case score. Only called findings are named; distrusted classes are listed apart
    (:func:`not_trusted_lines`)."""
    if not summary.multilabel:
        top, p = summary.most_probable
        colour = "red" if summary.abnormal else "green"
        text = f"**Most probable: :{colour}[{top}]** ({p:.2f})"
        if summary.runner_up:
            text += f", runner-up: {summary.runner_up[0]} ({summary.runner_up[1]:.2f})"
        if summary.near_tie:
            text += (
                f"  \n:orange[**Near tie**: the two classes differ by {p - summary.runner_up[1]:.2f} "
                f"(≤ {NEAR_TIE_MARGIN:.2f}); read this case yourself.]"
            )
        return text
    if summary.positives:
        text = "**Called:** " + ", ".join(
            f":red[**{f.name}**] ({f.probability:.2f}{', borderline' if f.borderline else ''})"
            for f in summary.positives
        )
    else:
        text = "**No finding called** at the operating thresholds"
    others = [f for f in summary.borderline if not f.positive]
    if others:
        text += "  \n:orange[Borderline, not called:] " + ", ".join(
            f"{f.name} ({f.probability:.2f} vs {f.threshold:.2f})" for f in others
        )
    called = any(f.name == summary.abnormality_class for f in summary.positives)
    source = f"{summary.abnormality_class}, called" if called else SCORE_SOURCE
    return text + f"  \nAbnormality score **{summary.abnormality:.2f}** ({source})"


def seconds_text(seconds: float) -> str:
    """A time estimate as the reader sees it: tenths below 10 s, whole seconds above."""
    if seconds < 0.1:
        return "< 0.1 s"
    return f"≈ {seconds:.1f} s" if seconds < 10 else f"≈ {seconds:.0f} s"


def method_label(method: str, estimates: Mapping[str, float]) -> str:
    """A heatmap method with its estimated time on this machine, so the slow one (Score-CAM) says so when offered."""
    return f"{method} ({seconds_text(estimates[method])})" if method in estimates else method


def left_out_note(reasons: Mapping[str, str]) -> str:
    """Which heatmap methods are not offered and why (with their estimate), or "" when all are."""
    left = [f"{method}, {reason}" for method, reason in reasons.items() if reason]
    return "Left out: " + "; ".join(left) + "." if left else ""


def dicom_fields(
    meta: Mapping[str, object], *, show_identifiers: bool = False
) -> list[tuple[str, str]]:
    """Header fields worth showing next to the image, de-identified unless ``show_identifiers``.

    Names are never read from the file; the patient ID only when the user switches it on.
    Fields the file lacks are left out; a non-DICOM image gives an empty list.
    """
    if meta.get("format") != "DICOM":
        return []
    fields = DICOM_FIELDS + (IDENTIFYING_FIELDS if show_identifiers else ())
    out = []
    for label, key in fields:
        value = meta.get(key)
        if value in (None, ""):
            continue
        out.append((label, human_date(value) if key == "study_date" else str(value)))
    return out


def intensity_text(meta: Mapping[str, object]) -> str:
    """How this image's stored values became brightness (from the decoder's metadata)."""
    how = meta.get("voi") or meta.get("scale") or "as stored"
    return f"{meta.get('format', 'image')}, {meta.get('bit_depth', '?')}-bit: {how}" + (
        ", inverted (MONOCHROME1)" if meta.get("inverted") else ""
    )


def lung_masked_text(dilation: float) -> str:
    """Why the heatmap ignores everything outside the lungs for a lung-masked model: it never saw it."""
    return (
        f"This model sees only the lungs: before scoring, each film is blacked out outside its lung mask "
        f"(bundled lung model, grown by {dilation:.0%} of the image side), as in training. The film is shown "
        "whole here; a film where no lung is found is scored as an almost black image."
    )


def lung_area_text(check: LungCheck) -> str:
    """The lung-area fraction of one image next to the range the lung check accepts."""
    return (
        f"Lungs: {check.fraction:.1%} of the image (the lung check accepts {check.low:.0%}–{check.high:.0%} "
        "for a frontal film)"
    )


EMPTY_MAP = "an empty map (no evidence anywhere)"


def in_lung_text(share: float) -> str:
    """ "x% of the map inside the lungs" for one heatmap (the share of its mass inside the lung mask)."""
    return EMPTY_MAP if math.isnan(share) else f"{share:.0%} of the map inside the lungs"


def in_lung_caption(share: float, lung_fraction: float, *, within: bool = False) -> str:
    """The in-lung share under the viewer, next to the share a map spread evenly over the film
    would have (the lungs' share of the image): the maps of the bundled models are barely more
    lung-bound than that, which the reader should know before trusting one."""
    text = in_lung_text(share)
    if not math.isnan(share):
        text += f"; a map spread evenly over the film would put {lung_fraction:.0%} there"
    if within:
        text += "; shown rescaled within the lungs and hidden outside them (the share is of the map before)"
    return text[0].upper() + text[1:] + "."


def no_lungs_text(missing: str) -> str:
    """Why the Predict page has no lung outline, lung area or in-lung share for this server."""
    return f"No lung outline, lung area or in-lung share of heatmaps: {missing}."
