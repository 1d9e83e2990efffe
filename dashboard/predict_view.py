"""The Predict page's parts, drawn from :mod:`dashboard.predict_batch` readings.

The reading view puts the findings beside the film viewer on the first screen: a film picker,
then two columns (findings | viewer); the batch table, its CSV and the notes come below. Every
film's outcome is drawn by :func:`findings_panel` alone, so a new outcome has one place to go.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import streamlit as st

from cxr_core.access import roles
from cxr_core.artifacts.prediction_table import PredictionRow
from cxr_core.data.imaging import LoadedImage
from cxr_core.inference.explain import (
    CLASS_AGNOSTIC,
    DEFAULT_METHOD,
    LOCALISATION_NOTE,
    contour_overlay,
)
from cxr_core.inference.findings import FindingsSummary
from cxr_core.inference.lungs import heatmap_within_mask
from cxr_core.inference.outcome import REFUSED, UNREADABLE
from cxr_core.inference.table_rows import upload_rows
from dashboard import charts, outcome_view, predict_batch, reading, state, viewer
from dashboard.predict_batch import FilmReading, PredictContext, Upload
from dashboard.report_downloads import report_downloads
from dashboard.widgets import cxr_errors
from dashboard.worklist_handover import films_from_worklist

PICK = "predict_pick"
FILES = "predict_files"
MAX_MB = predict_batch.LIMITS.max_bytes // (1024 * 1024)
SMALL_MULTIPLES = 6
CONTROL_PX = 240
"""Width of the heatmap row's class picker: the longest label fits; the row wraps if it must."""
BAR_PX = 22
"""Height of one finding's bar: 14 findings fit beside the viewer on a 900 px screen."""


def model_text(ctx: PredictContext) -> str:
    """The model and thresholds the findings come from, in one line."""
    predictor = ctx.predictor
    text = f"Model **{ctx.entry.name}** ({predictor.architecture}, {len(predictor.classes)} classes) · "
    text += (
        f"thresholds: **{ctx.threshold_set}**"
        if ctx.multilabel
        else "single most probable class (multiclass)"
    )
    if predictor.preprocess.lung_mask is not None:
        text += " · sees the lungs only (see How to read these results)"
    return text


def how_to_read(ctx: PredictContext) -> str:
    """The notes behind the page's marks and numbers."""
    notes = [reading.BANDS_NOTE, reading.INTENSITY_NOTE]
    if ctx.predictor.preprocess.lung_mask is not None:
        notes.append(reading.lung_masked_text(ctx.predictor.preprocess.lung_mask.dilation))
    return "\n\n".join(notes)


def uploader() -> list:
    """The file uploader; folded away once films are there, so the reading view starts high."""
    count = len(st.session_state.get(FILES) or [])
    label = f"Films ({count}): add or remove" if count else "Upload films"
    with st.expander(label, expanded=not count, icon=":material/upload_file:"):
        files = st.file_uploader(
            f"Chest X-rays (PNG, JPEG, BMP, TIFF or DICOM; up to {MAX_MB} MB each)",
            accept_multiple_files=True,
            key=FILES,
            max_upload_size=MAX_MB,
        )
    return files or films_from_worklist()


def film_picker(batch: Sequence[Upload]) -> int:
    """The film on screen: a picker over the batch with previous / next buttons."""
    labels = [f"{i + 1}/{len(batch)} · {u.name}" for i, u in enumerate(batch)]
    if len(batch) == 1:
        return 0
    if st.session_state.get(PICK) not in labels:
        st.session_state[PICK] = labels[0]

    def step(by: int) -> None:
        st.session_state[PICK] = labels[(labels.index(st.session_state[PICK]) + by) % len(labels)]

    with st.container(horizontal=True, vertical_alignment="center"):
        st.selectbox("Film", labels, key=PICK, label_visibility="collapsed")
        st.button("◀", key="predict_prev", on_click=step, args=(-1,), help="Previous film")
        st.button("▶", key="predict_next", on_click=step, args=(1,), help="Next film")
    return labels.index(st.session_state[PICK])


def _bars(summary: FindingsSummary, multilabel: bool) -> None:
    """The probability bars of the trusted findings (the distrusted ones are listed apart)."""
    trusted = dataclasses.replace(
        summary, findings=tuple(f for f in summary.findings if not f.flag)
    )
    figure = charts.probability_bars(trusted)
    figure.update_layout(
        height=max(160, BAR_PX * len(trusted.findings) + 70),
        yaxis=dict(tickfont=dict(size=13)),
        xaxis=dict(range=[0, 1.0], title="probability", dtick=0.25),
        margin=dict(l=8, r=8, t=8, b=8),
        bargap=0.25,
    )
    st.plotly_chart(figure, key="predict_bars", config={"displayModeBar": False})
    st.caption(reading.BARS_LEGEND if multilabel else reading.BARS_LEGEND_MULTICLASS)


def findings_panel(film: FilmReading, ctx: PredictContext) -> None:
    """One film's outcome and findings: warnings, calls, bars, distrusted classes, header fields."""
    st.markdown(f"#### {film.name}")
    if film.summary is None:  # refused or unreadable: why, nothing of the model's
        st.error(film.reason, icon=":material/error:")
        return
    outcome_view.outcome_banner(
        film.prediction, model_key=ctx.model_key, digest=film.upload.digest, ident=film.upload.ident
    )
    st.markdown(outcome_view.headline(film.summary))
    if film.summary.flagged:
        st.markdown(reading.not_trusted_lines(film.summary))
    _bars(film.summary, ctx.multilabel)
    image = film.image
    ident = film.upload.ident
    if image.meta.get("format") == "DICOM":
        may_identify = state.may(roles.VIEW_PATIENT_DATA)  # the patient ID: adjudicators and admins
        shown = may_identify and st.session_state.get(f"ids_{ident}", False)
        fields = reading.dicom_fields(image.meta, show_identifiers=shown)
        st.markdown(
            "**DICOM header** · "
            + (" · ".join(f"{k}: {v}" for k, v in fields) or "no view, age, sex or date")
        )
        if may_identify:
            st.toggle(
                "Show patient identifiers",
                key=f"ids_{ident}",
                help="Off by default: only the patient ID can be shown (names are never read from the file).",
            )
    st.caption(reading.intensity_text(image.meta))
    st.caption(
        reading.lung_area_text(film.lungs.result.check)
        if film.lungs is not None
        else reading.no_lungs_text(ctx.lungs.missing)
    )
    report_downloads(
        ctx.predictor,
        ctx.entry,
        ctx.active,
        [film.upload],
        film.upload.digest,
        image,
        film.prediction,
        film.lungs.result if film.lungs is not None else None,
    )


def default_method(ctx: PredictContext) -> str:
    """The heatmap method a film opens with: the default one when this machine offers it."""
    reasons, _ = predict_batch.methods(ctx.model_key, ctx.predictor)
    offered = [m for m, reason in reasons.items() if not reason]
    return DEFAULT_METHOD if DEFAULT_METHOD in offered else offered[0]


def _heat_controls(film: FilmReading, ctx: PredictContext) -> dict:
    """The heatmap row above the viewer (on/off, class, method) and its less used settings."""
    ident = film.upload.ident
    offered_reasons, estimates = predict_batch.methods(ctx.model_key, ctx.predictor)
    offered = [m for m, reason in offered_reasons.items() if not reason]
    classes = [f.name for f in film.summary.findings]  # the first, the most probable, by default
    row = st.container(horizontal=True, vertical_alignment="center", key=f"cam_row_{ident}")
    show = row.toggle("Heatmap", value=True, key=f"cam_show_{ident}")
    class_box, more = row.empty(), row.popover("More", help="Heatmap method, overlay, the lungs")
    method = more.selectbox(
        "Method",
        offered,
        index=offered.index(default_method(ctx)),
        key=f"cam_method_{ident}",
        disabled=not show,
        format_func=lambda m: reading.method_label(m, estimates),
        help="With its estimated time on this machine. "
        + (reading.left_out_note(offered_reasons) or ""),
    )
    agnostic = method in CLASS_AGNOSTIC
    class_name = class_box.selectbox(
        "Explain class",
        classes,
        index=0,
        key=f"cam_class_{ident}",
        disabled=not show or agnostic,
        label_visibility="collapsed",
        width=CONTROL_PX,
        format_func=lambda c: f"Explain: {c}",
        help="EigenCAM ignores the class: the same map for every class." if agnostic else None,
    )
    with more:
        settings = _overlay_settings(film, ident)
    return dict(show=show, method=method, class_name=class_name, agnostic=agnostic, **settings)


def _overlay_settings(film: FilmReading, ident: str) -> dict:
    """The "More" menu's overlay and lung settings (and the lung-mask download)."""
    mode = (
        st.segmented_control(
            "Overlay", ["contour", "heat"], default="contour", key=f"cam_mode_{ident}"
        )
        or "contour"
    )
    outline = st.slider("Outline level", 0.1, 0.9, 0.5, 0.05, key=f"cam_level_{ident}")
    opacity = st.slider("Heat opacity", 0.1, 1.0, 0.5, 0.05, key=f"cam_opacity_{ident}")
    lung_outline = within = False
    if film.lungs is not None:
        lung_outline = st.toggle("Lung outline", key=f"lung_show_{ident}")
        within = st.toggle(
            "Normalise within lungs",
            key=f"lung_norm_{ident}",
            help="Rescale the heatmap over the lungs alone and hide it outside them, so a peak "
            "on the mediastinum or a film edge does not set the scale inside the lungs.",
        )
        st.download_button(
            "Download lung mask (PNG)",
            film.lungs.png,
            file_name=f"{Path(film.name).stem}_lungs.png",
            mime="image/png",
            key=f"lung_png_{ident}",
            on_click="ignore",
            icon=":material/download:",
            help="0 outside, 255 inside the lungs, at the image's own size.",
        )
    return dict(
        mode=mode, outline=outline, opacity=opacity, lung_outline=lung_outline, within=within
    )


def _viewer_panel(film: FilmReading, ctx: PredictContext) -> None:
    """Runs as a fragment: the heatmap controls redraw only the viewer. Window, level, zoom,
    pan, invert and full screen act in the browser (:mod:`dashboard.viewer`)."""
    if film.summary is None:
        if film.image is not None:
            display = predict_batch.display(film.upload.digest, film.image)
            viewer.show_viewer(
                viewer.viewer_payload(film.upload.ident, display), key="predict_viewer"
            )
        return
    o = _heat_controls(film, ctx)
    image, digest = film.image, film.upload.digest
    heat, in_lungs, titles = None, None, ("Original",)
    if o["show"]:
        with cxr_errors(), st.spinner("Computing the heatmap…"):
            heat = predict_batch.heatmap(
                ctx.model_key, digest, o["class_name"], o["method"], ctx.predictor, image
            )
            target = "class-agnostic" if o["agnostic"] else o["class_name"]
            titles = (
                "Original",
                f"{o['method']} · {target} · {o['mode']}"
                + (" · within lungs" if o["within"] else ""),
            )
            if film.lungs is not None:
                mask = film.lungs.result.mask
                in_lungs = predict_batch.in_lungs(
                    ctx.model_key, ctx.lungs.key, digest, o["class_name"], o["method"], heat, mask
                )
                heat = heatmap_within_mask(heat, mask) if o["within"] else heat
    display = predict_batch.display(digest, image)
    payload = viewer.viewer_payload(
        film.upload.ident,
        display,
        heat=heat,
        heat_style=dict(mode=o["mode"], level=o["outline"], opacity=o["opacity"]),
        lungs=film.lungs.outline if film.lungs is not None and o["lung_outline"] else (),
        titles=titles,
    )
    viewer.show_viewer(payload, key="predict_viewer")
    _viewer_notes(film, image, heat is not None, in_lungs, o)
    _small_multiples(film, ctx, o)


viewer_panel = st.fragment(_viewer_panel)


def _viewer_notes(
    film: FilmReading, image: LoadedImage, heat: bool, in_lungs: float | None, o: dict
) -> None:
    scale = viewer.view_scale(image.pixels.shape)
    st.caption(
        f"{image.pixels.shape[1]}×{image.pixels.shape[0]} px"
        + (f", shown at {scale:.0%}" if scale < 1 else ", full resolution")
        + " · both panels zoom and pan together; window/level on the film's full bit depth."
    )
    if in_lungs is not None:
        st.caption(
            reading.in_lung_caption(in_lungs, film.lungs.result.fraction, within=o["within"])
        )
    if heat:
        st.caption(LOCALISATION_NOTE)


def _small_multiples(film: FilmReading, ctx: PredictContext, o: dict) -> None:
    """One small map per called finding, when switched on."""
    positives = [f.name for f in film.summary.positives][:SMALL_MULTIPLES]
    ident = film.upload.ident
    if not (positives and o["show"] and not o["agnostic"]) or not st.toggle(
        f"Outline every called finding ({len(positives)})",
        key=f"cam_all_{ident}",
        help="One small map per called finding, computed when switched on.",
    ):
        return
    columns = st.columns(min(len(positives), 3))
    probabilities = {f.name: f.probability for f in film.summary.findings}
    for i, name in enumerate(positives):
        with cxr_errors():
            small = predict_batch.heatmap(
                ctx.model_key, film.upload.digest, name, o["method"], ctx.predictor, film.image
            )
            caption = f"{name} ({probabilities[name]:.2f})"
            if film.lungs is not None:
                mask = film.lungs.result.mask
                share = predict_batch.in_lungs(
                    ctx.model_key, ctx.lungs.key, film.upload.digest, name, o["method"], small, mask
                )
                caption += " · " + reading.in_lung_text(share)
                small = heatmap_within_mask(small, mask) if o["within"] else small
            columns[i % len(columns)].image(
                contour_overlay(film.image.pixels, small, o["outline"], max_side=360),
                caption=caption,
                width="stretch",
            )


RESULT_COLUMNS = {
    "file": st.column_config.TextColumn(width=100),
    "outcome": st.column_config.TextColumn(width=72),
    "abnormality": st.column_config.NumberColumn(
        "score",
        format="%.2f",
        width=52,
        help="Abnormality score: the highest probability of any trusted finding. Sort by it to "
        "read the worst first.",
    ),
    "called": st.column_config.TextColumn(width=112),
    "borderline": st.column_config.NumberColumn("≈", width=32, help="Borderline calls"),
    "not trusted": st.column_config.TextColumn(width=80),
    "warnings": st.column_config.TextColumn(
        width=172, help="The input gate's warnings in short; the film's view and the CSV say why"
    ),
}
"""Column widths that fit a 1,024 px screen with the sidebar open (620 px); wider screens stretch
them. Long texts wrap in the tall rows."""
ROW_PX = 88
"""Rows tall enough for four lines: a warning's headline wraps instead of running off the table."""


def _table(readings: Sequence[FilmReading], slot) -> None:
    frame = reading.results_table(readings)
    slot.dataframe(
        frame,
        hide_index=True,
        height=36 + ROW_PX * max(len(frame), 1) + 3,
        row_height=ROW_PX,
        column_config=RESULT_COLUMNS,
    )


def batch_section(batch: Sequence[Upload], ctx: PredictContext, film: FilmReading, at: int) -> None:
    """The batch table (filled in as films are scored) and the page's CSV of every film."""
    st.markdown(f"#### Batch · {len(batch)} film{'s' if len(batch) > 1 else ''}")
    slot = st.empty()
    readings = predict_batch.read_batch(
        batch, ctx, {at: film}, on_progress=lambda r: _table(r, slot)
    )
    _table(readings, slot)
    keep_names = st.toggle(
        "Keep file names in the download",
        key="predict_csv_names",
        disabled=not state.may(roles.VIEW_PATIENT_DATA),
        help="Off: each file name is replaced by this install's pseudonym (the same file, the same "
        "pseudonym), as file names can identify patients.",
    )
    st.download_button(
        "Download all probabilities (CSV)",
        lambda: state.released_table(
            ctx.predictor.classes,
            _export_rows(readings, ctx),
            identifiable=keep_names,
            what="Predict page download",
        ),
        file_name="predictions.csv",
        mime="text/csv",
        key="predict_csv",
        icon=":material/download:",
        help="Every class's probability and threshold, the calls, distrusted classes, the input "
        "gate's outcome and warnings, the model and its checkpoint SHA-256.",
    )
    _prefetch_heatmaps(readings, ctx, at)


def _export_rows(readings: Sequence[FilmReading], ctx: PredictContext) -> list[PredictionRow]:
    """The batch as rows of the one prediction table, in upload order: scored films with their
    numbers, refused and unreadable ones with why (films not scored yet are left out)."""
    scored = [r for r in readings if r.prediction is not None]
    rows = upload_rows(
        [r.prediction for r in scored],
        [r.image for r in scored],
        multilabel=ctx.multilabel,
        model=ctx.entry.name,
        checkpoint_digest=predict_batch.checkpoint_sha256(ctx.model_key, str(ctx.entry.model_path)),
        threshold_set=ctx.threshold_set,
        flagged=ctx.flagged,
    )
    by_film = dict(zip((id(r) for r in scored), rows))
    out = []
    for r in readings:
        if r.prediction is not None:
            out.append(by_film[id(r)])
        elif r.outcome in (REFUSED, UNREADABLE):
            error = r.reason if r.outcome == UNREADABLE else ""
            out.append(PredictionRow(r.name, outcome=r.outcome, reason=r.reason, error=error))
    return out


def _prefetch_heatmaps(readings: Sequence[FilmReading], ctx: PredictContext, at: int) -> None:
    """After the batch: every other film's opening heatmap (its most probable finding, the default
    method), so switching films shows the map at once instead of computing it then. A click
    meanwhile interrupts this; the film then picked computes its own map."""
    method = default_method(ctx)
    for i, r in enumerate(readings):
        if i != at and r.summary is not None:
            with cxr_errors():
                predict_batch.heatmap(
                    ctx.model_key,
                    r.upload.digest,
                    r.summary.findings[0].name,
                    method,
                    ctx.predictor,
                    r.image,
                )
