"""Presentation-only shaping for the Thresholds and Review pages: labels, column titles, display order.

Every number comes from :mod:`cxr_core` (agreement, corrected metrics, the audit log); these
functions only rename, format and order it for display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from cxr_core.evaluation.review import Blinding, kappa_text
from dashboard.marks import Mark, from_columns
from dashboard.tables import human_date

MODE_LABELS = {
    "unblinded": "Unblinded (label and model shown)",
    "blind_labels": "Blinded to labels (model shown)",
    "blind_all": "Blinded to labels and model (revealed after saving)",
}
CALL_LABELS = {"present": "Present", "absent": "Absent", "unsure": "Unsure"}
VERDICT_LABELS = {
    "agree": "Agrees with the model",
    "model_wrong": "Model is wrong",
    "label_wrong": "Label is wrong",
    "unsure": "Unsure",
}
REASON_LABELS = {"": "—"}


def reason_label(reason: str) -> str:
    return REASON_LABELS.get(reason, reason.capitalize())


def where_text(current: Mark | None, saved: Mark | None) -> str:
    """One finding's "where" under its call: the mark, and whether saving will change it."""
    if current is None:
        return "Where: " + (
            "mark cleared, saved without one" if saved is not None else "not marked"
        )
    return f"Where: {current.text()}" + ("" if current == saved else " · not saved yet")


def mark_hint(by: str, class_name: str | None) -> str:
    """What to do on the film to mark where ``class_name`` is (None: nothing armed yet)."""
    if class_name is None:
        return "To mark where a finding is: W, or its where button in the grid"
    action = "Drag a box" if by == "box" else "Click"
    return f"{action} on the film to mark where you see {class_name} (Esc: stop)"


REVEAL = "Reveal labels and model output (ends your blinded reading in this session)"


def closed_text(blinding: Blinding, reader: str) -> str:
    """Why a blinded session's Agreement, Adjudicate and Corrected metrics views are closed, and what opens them."""
    why = (
        "**Closed while you read blinded.** Agreement, Adjudicate, Corrected metrics and the verdicts export "
        "show every film's dataset label and model output, and the other readers' calls."
    )
    if not reader:
        return (
            f"{why} Enter your name as **Reader** in the sidebar: they open for each reader who has saved "
            f"calls on all {blinding.films} films of the session."
        )
    return (
        f"{why} You have **{blinding.left} of {blinding.films} films** left to read in this session; they open "
        "once you have saved your calls on every film. An adjudicator who does not read, or a reader who stops "
        "here, can reveal them now: you could then no longer save calls on films you have not read."
    )


def open_text(blinding: Blinding) -> str:
    """Why a blinded session's views are open to this reader ('' in an unblinded session)."""
    if blinding.mode == "unblinded":
        return ""
    if blinding.revealed_at is not None:
        return (
            f"Open to you since you revealed the labels and model output on {human_date(blinding.revealed_at)}"
            f"{f' with {blinding.left} film(s) unread' if blinding.left else ''}."
        )
    return "Open to you: you have saved your calls on every film of this blinded session."


def revealed_text(revealed_at: str) -> str:
    """On a film read after revealing: why its label and model output show and the call cannot be saved."""
    return (
        f"You revealed the labels and model output of this session on {human_date(revealed_at)}, so they show "
        "here, and calls on findings you had not called before cannot be saved: they would not be blinded. "
        "Calls you saved before revealing can still be changed."
    )


def activation_log(entries: Sequence[Mapping]) -> pd.DataFrame:
    """The thresholds audit log, newest first, with readable titles."""
    rows = [
        {
            "When (UTC)": str(e["when"])[:19].replace("T", " "),
            "By": e["by"] or "(not recorded)",
            "From": e["from"],
            "To": e["to"],
        }
        for e in reversed(list(entries))
    ]
    return pd.DataFrame(rows, columns=["When (UTC)", "By", "From", "To"])


def session_label(session_id: int, name: str, mode: str, created: str) -> str:
    """A session in the session picker; the number keeps two sessions of one name and minute apart
    (Streamlit tells a picker's options apart by their text)."""
    return f"#{session_id} {name} · {MODE_LABELS[mode].split(' (')[0]} · {created[:16].replace('T', ' ')}"


def film_label(index: int, image_id: str, reviewed: bool, draft: bool = False) -> str:
    """A film in the film picker: ✓ read (all calls saved), ✎ unsaved calls kept as a draft, ○ neither."""
    mark = "✎" if draft else ("✓" if reviewed else "○")
    return f"{mark} {index + 1} · {image_id}"


def read_progress(index: int, n_films: int, n_read: int, n_drafts: int) -> str:
    """Where the reader is: film 12 / 100 · 11 read · 2 with unsaved drafts."""
    text = f"Film {index + 1} / {n_films} · {n_read} read"
    return text + (f" · {n_drafts} with drafts" if n_drafts else "")


def agreement_display(table: pd.DataFrame) -> pd.DataFrame:
    """The kappa table with readable titles; Fleiss rows say 'all readers'. κ and agreement are text, so a
    kappa without a value says why instead of showing an empty 'None' cell."""
    shown = pd.DataFrame(
        {
            "Finding": table["class_name"],
            "Statistic": table["statistic"].map({"cohen": "Cohen's κ", "fleiss": "Fleiss' κ"}),
            "Between": [
                f"{a} vs {b}" if s == "cohen" else f"all {n} readers"
                for a, b, s, n in zip(
                    table["rater_a"], table["rater_b"], table["statistic"], table["n_raters"]
                )
            ],
            "Films": table["n_items"],
            "κ": [kappa_text(k, why) for k, why in zip(table["kappa"], table["undefined"])],
            "κ 95% CI": [_interval(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"])],
            "Agreement": [
                NOT_ENOUGH if pd.isna(a) else f"{a:.3f}" for a in table["observed_agreement"]
            ],
            "Agreement 95% CI": [
                _interval(lo, hi)
                for lo, hi in zip(table["agreement_ci_low"], table["agreement_ci_high"])
            ],
        }
    )
    return shown.reset_index(drop=True)


NOT_ENOUGH = "not enough films"


def _interval(low: float, high: float, pattern: str = "{:.2f}") -> str:
    if pd.isna(low) or pd.isna(high):
        return "–"
    return f"{pattern.format(low)} to {pattern.format(high)}"


def disagreement_display(table: pd.DataFrame) -> pd.DataFrame:
    shown = pd.DataFrame(
        {
            "Film": table["image_id"],
            "Finding": table["class_name"],
            "Readers' calls": [
                ", ".join(f"{r}: {c}" for r, c in sorted(calls.items())) for calls in table["calls"]
            ],
            "Dataset label": table["ground_truth"],
            "Model": table["model_call"],
            "Probability": table["probability"],
            "Majority": table["majority"].replace("", "tie"),
            "Final label": [
                ("–" if pd.isna(v) else ("present" if int(v) == 1 else "absent"))
                for v in table["adjudicated"]
            ],
            "Adjudicator": table["adjudicator"],
        }
    )
    return shown.reset_index(drop=True)


def _confidence(value) -> str:
    return "—" if value is None or pd.isna(value) else str(int(value))


def reader_calls_display(rows: pd.DataFrame) -> pd.DataFrame:
    """Each reader's call on one finding of one film (rows of the session's verdict frame), for adjudication."""
    shown = pd.DataFrame(
        {
            "Reader": rows["reviewer"],
            "Call": rows["reader_call"].map(lambda c: CALL_LABELS.get(c, c)),
            "Confidence": rows["confidence"].map(_confidence),
            "Reason": rows["reason"].fillna("").map(reason_label),
            "Note": rows["note"].fillna(""),
            "Where": [
                (m.text() if (m := from_columns(r)) is not None else "no mark")
                for r in rows.to_dict("records")
            ],
        },
        columns=["Reader", "Call", "Confidence", "Reason", "Note", "Where"],
    )
    return shown.reset_index(drop=True)


def call_hover(row: Mapping, mark: Mark) -> str:
    """A reader's mark's hover text: who, their call, how sure, why."""
    parts = [f"{row['reviewer']}: {CALL_LABELS.get(row['reader_call'], row['reader_call'])}"]
    if _confidence(row.get("confidence")) != "—":
        parts.append(f"confidence {_confidence(row.get('confidence'))}")
    parts += [str(row[k]) for k in ("reason", "note") if row.get(k) and not pd.isna(row[k])]
    return " · ".join(parts) + f"<br>{mark.text()}"


CORRECTED_TITLES = {
    "n_positive": "Positives",
    "auroc": "AUROC",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV",
    "npv": "NPV",
}


def _corrected_cell(row: Mapping, side: str) -> str:
    """One side (original / corrected) of a metric: value (95% CI), or why there is none."""
    value = row[side]
    if row["metric"] == "n_positive":
        return f"{value:.0f}"
    if pd.isna(value):
        return f"{NOT_ENOUGH} (n={int(row[f'{side}_n'])})"
    return f"{value:.3f} ({row[f'{side}_low']:.2f}–{row[f'{side}_high']:.2f})"


def _change_cell(row: Mapping) -> str:
    if row["metric"] == "n_positive":
        return f"{row['change']:+.0f}"
    if pd.isna(row["change"]):
        return "–"
    return f"{row['change']:+.3f} ({row['change_low']:+.2f}, {row['change_high']:+.2f})"


def corrected_display(table: pd.DataFrame) -> pd.DataFrame:
    """Original and corrected metrics side by side, a row per finding and metric (:data:`~cxr_core.
    evaluation.review.CORRECTED_COLUMNS`), each as "value (95% CI)" or "not enough films (n=…)":
    five narrow columns fit a 1024 px screen where a column per metric and label set would scroll."""
    rows = [
        {
            "Finding": r["class_name"],
            "Metric": CORRECTED_TITLES.get(r["metric"], r["metric"]),
            "Original labels": _corrected_cell(r, "original"),
            "Corrected labels": _corrected_cell(r, "corrected"),
            "Change (95% CI)": _change_cell(r),
        }
        for r in table.to_dict("records")
    ]
    return pd.DataFrame(
        rows,
        columns=["Finding", "Metric", "Original labels", "Corrected labels", "Change (95% CI)"],
    )


def corrected_note(table: pd.DataFrame) -> str:
    """Each finding's threshold and how many of its labels the readers changed, in one line."""
    firsts = table.drop_duplicates("class_name")
    return " · ".join(
        f"{r['class_name']}: threshold {r['threshold']:.3f}, {int(r['n_changed'])} label(s) changed"
        for r in firsts.to_dict("records")
    )
