"""Predict: upload radiographs, read each one's findings summary, view it with window/level, heatmaps and the lungs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from cxr_core.artifacts.catalog import checkpoint_digest
from cxr_core.artifacts.prediction_table import prediction_table_text
from cxr_core.data.imaging import ImageLimits, LoadedImage, load_image
from cxr_core.errors import CXRError
from cxr_core.inference.explain import (
    CLASS_AGNOSTIC,
    DEFAULT_LAYER,
    DEFAULT_METHOD,
    LOCALISATION_NOTE,
    METHODS,
    contour_overlay,
    estimate_seconds,
    explain,
    forward_seconds,
    interactive_methods,
)
from cxr_core.inference.findings import (
    FindingsSummary,
    summarise_findings,
)
from cxr_core.inference.lungs import LungSegmenter, heatmap_mass_in_mask, heatmap_within_mask
from cxr_core.inference.outcome import GateVerdict
from cxr_core.inference.predictor import Predictor
from cxr_core.inference.table_rows import upload_rows
from dashboard import charts, outcome_view, reading, state, viewer
from dashboard.report_downloads import report_downloads
from dashboard.tables import table_height
from dashboard.widgets import cxr_errors, require_entry
from dashboard.worklist_handover import films_from_worklist

LIMITS = ImageLimits()
MAX_MB = LIMITS.max_bytes // (1024 * 1024)
HEAT_GRID = 256  # heatmaps are cached and drawn at most this many cells a side
SMALL_MULTIPLES = 6


@st.cache_data(max_entries=256, show_spinner=False)
def _decode(digest: str, name: str, _data: bytes) -> LoadedImage:
    return load_image(_data, name=name, limits=LIMITS)


@st.cache_data(max_entries=256, show_spinner="Finding the lungs…")
def _lungs(
    lung_key: str, digest: str, _segmenter: LungSegmenter, _image: LoadedImage
) -> viewer.LungView:
    return viewer.lung_view(_segmenter.segment(_image.pixels))


@st.cache_data(max_entries=512, show_spinner=False)
def _assess(
    model_key: str,
    lung_key: str,
    digests: tuple[str, ...],
    _predictor: Predictor,
    _images: list[LoadedImage],
    _views: list[viewer.LungView] | None,
) -> tuple[np.ndarray, list[GateVerdict]]:
    return _predictor.assess(
        _images, lungs=[v.result for v in _views] if _views is not None else None
    )


@st.cache_data(max_entries=256, show_spinner="Computing the heatmap…")
def _heatmap(
    model_key: str,
    digest: str,
    class_name: str,
    method: str,
    _predictor: Predictor,
    _image: LoadedImage,
) -> np.ndarray:
    heat = explain(_predictor, _image, class_name, method, layer=DEFAULT_LAYER)
    scale = HEAT_GRID / max(heat.shape)
    if scale < 1:
        heat = cv2.resize(
            heat,
            (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
    return heat


@st.cache_data(max_entries=1024, show_spinner=False)
def _in_lungs(
    model_key: str,
    lung_key: str,
    digest: str,
    class_name: str,
    method: str,
    _heat: np.ndarray,
    _mask: np.ndarray,
) -> float:
    return heatmap_mass_in_mask(_heat, _mask)


@st.cache_data(max_entries=8, show_spinner=False)
def _methods(model_key: str, _predictor: Predictor) -> tuple[dict[str, str], dict[str, float]]:
    forward_s = forward_seconds(_predictor, repeats=1)
    return (
        interactive_methods(_predictor, forward_s),
        {method: estimate_seconds(_predictor, method, forward_s) for method in METHODS},
    )


@st.cache_data(max_entries=16, show_spinner=False)
def _digest(model_key: str, path: str) -> str:
    return checkpoint_digest(path)


def _apply_preset(ident: str, pixels: np.ndarray) -> None:
    level, width = viewer.preset_window(st.session_state[f"wl_preset_{ident}"], pixels)
    st.session_state[f"wl_level_{ident}"], st.session_state[f"wl_width_{ident}"] = (
        round(level, 3),
        round(width, 3),
    )


def _viewer_panel(
    predictor: Predictor,
    model_key: str,
    image: LoadedImage,
    digest: str,
    ident: str,
    summary: FindingsSummary,
    lungs: viewer.LungView | None,
    lung_key: str,
) -> None:
    """Runs as a fragment: window/level, heatmap and lung controls redraw only this panel."""
    if f"wl_level_{ident}" not in st.session_state:
        st.session_state[f"wl_preset_{ident}"] = viewer.DEFAULT_PRESET
        _apply_preset(ident, image.pixels)
    c1, c2, c3, c4 = st.columns([2, 2, 2, 2])
    c1.selectbox(
        "Window preset",
        list(viewer.WINDOW_PRESETS),
        key=f"wl_preset_{ident}",
        on_change=_apply_preset,
        args=(ident, image.pixels),
    )
    level = c2.slider("Level (window centre)", 0.0, 1.0, step=0.01, key=f"wl_level_{ident}")
    width = c3.slider("Window width", 0.02, 1.0, step=0.01, key=f"wl_width_{ident}")

    methods, estimates = _methods(model_key, predictor)
    offered = [m for m, reason in methods.items() if not reason]
    classes = [f.name for f in summary.findings]
    h1, h2, h3, h4 = st.columns([1, 2, 2, 2])
    show = h1.toggle(
        "Heatmap",
        value=True,
        key=f"cam_show_{ident}",
        help="Computed only while shown; off, the viewer shows the image alone.",
    )
    mode = (
        h2.segmented_control(
            "Overlay",
            ["contour", "heat"],
            default="contour",
            key=f"cam_mode_{ident}",
            disabled=not show,
        )
        or "contour"
    )
    method = h3.selectbox(
        "Method",
        offered,
        index=offered.index(DEFAULT_METHOD) if DEFAULT_METHOD in offered else 0,
        key=f"cam_method_{ident}",
        disabled=not show,
        format_func=lambda m: reading.method_label(m, estimates),
        help=reading.left_out_note(methods) or None,
    )
    agnostic = method in CLASS_AGNOSTIC
    class_name = h4.selectbox(
        "Explain class",
        classes,
        index=0,
        key=f"cam_class_{ident}",
        disabled=not show or agnostic,
        help="EigenCAM ignores the class: the same map for every class." if agnostic else None,
    )
    if mode == "contour":
        outline = c4.slider(
            "Outline level",
            0.1,
            0.9,
            0.5,
            0.05,
            key=f"cam_level_{ident}",
            disabled=not show,
            help="The outline encloses the map at or above this fraction of its maximum.",
        )
        opacity = 0.5
    else:
        opacity = c4.slider(
            "Heat opacity", 0.1, 1.0, 0.5, 0.05, key=f"cam_opacity_{ident}", disabled=not show
        )
        outline = 0.5
    lung_outline = within = False
    if lungs is not None:
        l1, l2, l3 = st.columns([2, 2, 4])
        lung_outline = l1.toggle(
            "Lung outline",
            key=f"lung_show_{ident}",
            help="The lung model's outline of the lungs, on both panels.",
        )
        within = l2.toggle(
            "Normalise within lungs",
            key=f"lung_norm_{ident}",
            disabled=not show,
            help="Rescale the heatmap over the lungs alone and hide it outside them, so a peak on the "
            "mediastinum or a film edge does not set the scale inside the lungs.",
        )
        l3.download_button(
            "Download lung mask (PNG)",
            lungs.png,
            file_name=f"{Path(image.name).stem}_lungs.png",
            mime="image/png",
            key=f"lung_png_{ident}",
            on_click="ignore",
            icon=":material/download:",
            help="0 outside, 255 inside the lungs, at the image's own size.",
        )

    display = viewer.resize_for_view(viewer.apply_window(image.pixels, level, width))
    heat, titles, in_lungs = None, ("Original",), None
    if show:
        with cxr_errors():
            heat = _heatmap(model_key, digest, class_name, method, predictor, image)
            target = "class-agnostic" if agnostic else class_name
            titles = (
                "Original",
                f"{method} · {target} · {mode}" + (" · within lungs" if within else ""),
            )
            if lungs is not None:
                in_lungs = _in_lungs(
                    model_key, lung_key, digest, class_name, method, heat, lungs.result.mask
                )
                if within:
                    heat = heatmap_within_mask(heat, lungs.result.mask)
    st.plotly_chart(
        charts.image_viewer(
            display,
            heat=heat,
            mode=mode,
            level=outline,
            opacity=opacity,
            titles=titles,
            height=viewer.panel_height(display.shape, 2 if show else 1),
            outline=lungs.outline if lung_outline else (),
        ),
        key=f"viewer_{ident}",
        config={"scrollZoom": True, "displaylogo": False},
    )
    shown_scale = viewer.view_scale(image.pixels.shape)
    st.caption(
        f"{image.pixels.shape[1]}×{image.pixels.shape[0]} px"
        + (f", shown at {shown_scale:.0%}" if shown_scale < 1 else ", full resolution")
        + f" · window {level - width / 2:.2f}–{level + width / 2:.2f} · scroll to zoom, drag to zoom a box, "
        "double-click to reset; both panels move together."
    )
    if in_lungs is not None:
        st.caption(reading.in_lung_caption(in_lungs, lungs.result.fraction, within=within))
    if show:
        st.caption(" ".join(filter(None, (LOCALISATION_NOTE, reading.left_out_note(methods)))))

    positives = [f.name for f in summary.positives][:SMALL_MULTIPLES]
    if (
        positives
        and show
        and not agnostic
        and st.toggle(
            f"Outline every positive finding ({len(positives)})",
            key=f"cam_all_{ident}",
            help="One small map per positive finding, computed when switched on.",
        )
    ):
        columns = st.columns(min(len(positives), 3))
        for i, name in enumerate(positives):
            with cxr_errors():
                small = _heatmap(model_key, digest, name, method, predictor, image)
                caption = f"{name} ({summary.findings[classes.index(name)].probability:.2f})"
                if lungs is not None:
                    share = _in_lungs(
                        model_key, lung_key, digest, name, method, small, lungs.result.mask
                    )
                    caption += " · " + reading.in_lung_text(share)
                    small = heatmap_within_mask(small, lungs.result.mask) if within else small
                columns[i % len(columns)].image(
                    contour_overlay(image.pixels, small, outline, max_side=360),
                    caption=caption,
                    width="stretch",
                )


viewer_panel = st.fragment(_viewer_panel)

st.title("Predict")
entry = require_entry()
if entry.external:
    st.info(
        f"**{entry.name}** holds predictions made by another tool ({entry.card.provenance}); there are no weights "
        "here to score new images with. Its evaluation is on the Performance, Thresholds and Review pages."
    )
    st.stop()
lung_model = state.lung_model()
predictor = state.predictor(entry)
active = state.active_thresholds(entry)
multilabel = predictor.label_space.multilabel
model_key = f"{entry.model_path}:{entry.model_path.stat().st_mtime}"

st.caption(
    f"Model **{entry.name}** ({predictor.architecture}, {len(predictor.classes)} classes) · "
    + (
        f"thresholds: **{active.name}**"
        if multilabel
        else "single most probable class (multiclass)"
    )
)
if predictor.preprocess.lung_mask is not None:
    st.caption(reading.lung_masked_text(predictor.preprocess.lung_mask.dilation))
with st.expander("How to read these results"):
    st.markdown(reading.BANDS_NOTE + "\n\n" + reading.INTENSITY_NOTE)
files = st.file_uploader(
    f"Chest X-rays (PNG, JPEG, BMP, TIFF or DICOM; up to {MAX_MB} MB each)",
    accept_multiple_files=True,
    key="predict_files",
    max_upload_size=MAX_MB,
)
files = files or films_from_worklist()
if not files:
    st.info("Upload one or more frontal chest radiographs to see the model's findings.")
    st.stop()

images: list[LoadedImage] = []
digests: list[str] = []
for upload in files:
    data = upload.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    try:
        image = _decode(
            digest, upload.name, data
        )  # the input gate's refusals come with the results
        images.append(image)
        digests.append(digest)
    except CXRError as exc:
        st.error(str(exc), icon=":material/error:")
if not images:
    st.stop()

lung_views = None
if lung_model.segmenter is not None:
    lung_views = [
        _lungs(lung_model.key, d, lung_model.segmenter, im) for d, im in zip(digests, images)
    ]
probabilities, verdicts = _assess(
    model_key, lung_model.key, tuple(digests), predictor, images, lung_views
)
thresholds = predictor.resolve_thresholds(active.thresholds)
predictions = predictor.to_predictions(
    probabilities,
    [im.name for im in images],
    thresholds,
    verdicts,
    score_anyway=outcome_view.score_anyway_choices(model_key, digests),
)
summaries = [summarise_findings(p, multilabel=multilabel) for p in predictions]

st.subheader("Results")
results = outcome_view.results_table(predictions, summaries)
st.dataframe(
    results,
    hide_index=True,
    key="predict_table",
    height=table_height(len(results)),
    column_config={
        "file": st.column_config.TextColumn(width=150),
        "outcome": st.column_config.TextColumn(width=110),
        "call": st.column_config.TextColumn(width=125),
        "findings": st.column_config.TextColumn(width=270),
        "highest finding": st.column_config.TextColumn(width=190),
        "borderline": st.column_config.NumberColumn("≈ borderline", width=85),
        "warnings": st.column_config.TextColumn(width=160),
    },
)
export = upload_rows(
    predictions,
    images,
    multilabel=multilabel,
    model=entry.name,
    checkpoint_digest=_digest(model_key, str(entry.model_path)),
    threshold_set=active.name,
)
st.download_button(
    "Download all probabilities (CSV)",
    prediction_table_text(predictor.classes, export),
    file_name="predictions.csv",
    mime="text/csv",
    key="predict_csv",
    icon=":material/download:",
    help="Every class's probability and threshold, the call, the input gate's outcome and warnings, the model "
    "and its checkpoint SHA-256.",
)

names = [f"{i + 1}. {im.name}" for i, im in enumerate(images)]
position = (
    names.index(st.selectbox("Image to read", names, key="predict_pick")) if len(images) > 1 else 0
)
image, digest, summary = images[position], digests[position], summaries[position]
ident = f"{position}_{digest[:12]}"  # the same file uploaded twice still gets its own widgets

st.divider()
st.subheader(image.name)
outcome_view.outcome_banner(predictions[position], model_key=model_key, digest=digest, ident=ident)
if not predictions[position].probabilities:
    outcome_view.refused_image(image)
    st.stop()
left, right = st.columns([1, 1], gap="medium")
with left:
    st.markdown(outcome_view.headline(summary))
    fields = reading.dicom_fields(
        image.meta, show_identifiers=st.session_state.get(f"ids_{ident}", False)
    )
    if image.meta.get("format") == "DICOM":
        st.markdown(
            "**DICOM header** · "
            + (" · ".join(f"{k}: {v}" for k, v in fields) or "no view, age, sex or date")
        )
        st.toggle(
            "Show patient identifiers",
            key=f"ids_{ident}",
            help="Off by default: only the patient ID can be shown (names are never read from the file).",
        )
    st.caption(reading.intensity_text(image.meta))
    st.caption(
        reading.lung_area_text(lung_views[position].result.check)
        if lung_views is not None
        else reading.no_lungs_text(lung_model.missing)
    )
    report_downloads(
        predictor,
        entry,
        active,
        files,
        digest,
        image,
        predictions[position],
        lung_views[position].result if lung_views is not None else None,
    )
with right:
    st.plotly_chart(
        charts.probability_bars(summary), key=f"bars_{ident}", config={"displayModeBar": False}
    )
    st.caption(reading.BARS_LEGEND if multilabel else reading.BARS_LEGEND_MULTICLASS)
viewer_panel(
    predictor,
    model_key,
    image,
    digest,
    ident,
    summary,
    lung_views[position] if lung_views is not None else None,
    lung_model.key,
)
