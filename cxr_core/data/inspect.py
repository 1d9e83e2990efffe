"""What is in a manifest: counts, prevalence, patients, missing files, leakage.

:func:`summarise` returns plain JSON-ready data so the CLI, the dashboard and reports show the
same numbers; :func:`format_summary` only lays them out as text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import existing_mask
from cxr_core.data.manifest import SPLITS, Manifest
from cxr_core.data.merge import per_source_counts
from cxr_core.data.splits import leakage_report

UNASSIGNED = "unassigned"
_EXAMPLES = 5


def _split_names(frame: pd.DataFrame) -> list[str]:
    present = set(frame["split"])
    return [s for s in SPLITS if s in present] + ([UNASSIGNED] if "" in present else [])


def _split_frames(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {s: frame[frame["split"] == ("" if s == UNASSIGNED else s)] for s in _split_names(frame)}


def summarise(manifest: Manifest, *, check_files: bool = True, note: str = "") -> dict:
    """Everything ``cxr data inspect`` shows, as data (ints, floats, strings, lists, dicts)."""
    frame = manifest.frame
    classes = list(manifest.classes)
    parts = {"all": frame, **_split_frames(frame)}

    splits = {
        name: {"images": int(len(part)), "patients": int(part["patient_id"].nunique())}
        for name, part in parts.items()
    }
    per_class = {}
    for cls in classes:
        entry = {}
        for name, part in parts.items():
            col = part[cls]
            pos, known = int((col == 1).sum()), int(col.notna().sum())
            entry[name] = {
                "positive": pos,
                "negative": known - pos,
                "unknown": int(len(col) - known),
                "prevalence": round(pos / known, 4) if known else None,
            }
        per_class[cls] = entry

    per_patient = frame.groupby("patient_id").size()
    missing: dict = {"checked": check_files}
    if check_files:
        exists = existing_mask(frame["path"])
        missing.update(
            count=int((~exists).sum()), examples=frame.loc[~exists, "path"].head(_EXAMPLES).tolist()
        )
    views = frame["view"].replace("", "unknown").value_counts()
    return {
        "source": manifest.source,
        "label_space": manifest.label_space.to_dict(),
        "note": note,
        "images": int(len(frame)),
        "patients": int(per_patient.size),
        "splits": splits,
        "classes": per_class,
        "images_per_patient": {
            "min": int(per_patient.min()) if len(per_patient) else 0,
            "median": float(np.median(per_patient)) if len(per_patient) else 0.0,
            "max": int(per_patient.max()) if len(per_patient) else 0,
        },
        "views": {str(k): int(v) for k, v in views.items()},
        "missing_files": missing,
        "leakage": leakage_report(manifest),
        "sources": per_source_counts(manifest),
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """First column left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))
        )

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def _sources_table(sources: dict) -> list[str]:
    """Per source: images, patients and positives per class ("-" where a source does not label it)."""
    names = list(sources)
    classes = list(next(iter(sources.values()))["classes"])
    rows = [
        ["images", *(str(sources[n]["images"]) for n in names)],
        ["patients", *(str(sources[n]["patients"]) for n in names)],
    ]
    for cls in classes:
        cells = []
        for n in names:
            entry = sources[n]["classes"][cls]
            labelled = entry["positive"] + entry["negative"]
            cells.append(str(entry["positive"]) if labelled else "-")
        rows.append([f"{cls} pos", *cells])
    return [
        "per source ('-': not labelled there, unknown for its images)",
        *_table(["", *names], rows),
    ]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_summary(summary: dict) -> str:
    """Aligned plain-text rendering of :func:`summarise` output."""
    space = summary["label_space"]
    lines = [
        f"source:      {summary['source']}",
        f"label space: {space['name']} ({space['task']}, {len(space['classes'])} classes)",
        f"images:      {summary['images']}   patients: {summary['patients']}",
    ]
    if summary["note"]:
        lines.append(f"note:        {summary['note']}")
    splits = [s for s in summary["splits"] if s != "all"]
    lines += [
        "",
        *_table(
            ["split", "images", "patients", "share"],
            [
                [
                    s,
                    str(v["images"]),
                    str(v["patients"]),
                    _pct(v["images"] / summary["images"]) if summary["images"] else "-",
                ]
                for s, v in summary["splits"].items()
            ],
        ),
    ]

    any_unknown = any(e["all"]["unknown"] for e in summary["classes"].values())
    header = ["class", *(f"{s} pos" for s in splits), "total pos", "prevalence"] + (
        ["unknown"] if any_unknown else []
    )
    rows = []
    for cls, entry in summary["classes"].items():
        row = [
            cls,
            *(str(entry[s]["positive"]) for s in splits),
            str(entry["all"]["positive"]),
            _pct(entry["all"]["prevalence"]),
        ]
        rows.append(row + ([str(entry["all"]["unknown"])] if any_unknown else []))
    lines += ["", *_table(header, rows)]

    if summary.get("sources"):
        lines += ["", *_sources_table(summary["sources"])]
    ipp = summary["images_per_patient"]
    lines += [
        "",
        f"images per patient: min {ipp['min']}, median {ipp['median']:g}, max {ipp['max']}",
    ]
    lines.append("views: " + ", ".join(f"{k} {v}" for k, v in summary["views"].items()))
    missing = summary["missing_files"]
    if not missing["checked"]:
        lines.append("missing files: not checked")
    elif missing["count"]:
        lines.append(f"missing files: {missing['count']} (e.g. {', '.join(missing['examples'])})")
    else:
        lines.append("missing files: none")
    leak = summary["leakage"]
    if leak["ok"]:
        lines.append("patient leakage: none (no patient has images in more than one split)")
    else:
        shown = "; ".join(
            f"{e['patient_id']} ({', '.join(f'{s}: {n}' for s, n in e['images_per_split'].items())})"
            for e in leak["examples"]
        )
        lines.append(
            f"patient leakage: {leak['patients_in_several_splits']} patient(s) in several splits, e.g. {shown}"
        )
    moved = leak["moved_to_patient_split"]
    if moved["images"]:
        where = ", ".join(f"{n} to {s}" for s, n in moved["images_per_split"].items())
        lines.append(
            f"moved to keep patients together: {moved['images']} image(s) of {moved['patients']} patient(s) "
            f"given as training pool ({where}), because the patient has images there"
        )
    return "\n".join(lines)
