"""Predict: upload radiographs, see per-class probabilities against the active thresholds, and Grad-CAM."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import streamlit as st

from cxr_core.data.imaging import ImageLimits, LoadedImage, load_image
from cxr_core.errors import CXRError
from cxr_core.inference.explain import METHODS, explain, overlay, overlay_png
from cxr_core.inference.predictor import Predictor
from dashboard import charts, state
from dashboard.widgets import cxr_errors, require_entry

LIMITS = ImageLimits()
MAX_MB = LIMITS.max_bytes // (1024 * 1024)


@st.cache_data(max_entries=256, show_spinner=False)
def _decode(digest: str, name: str, _data: bytes) -> LoadedImage:
    return load_image(_data, name=name, limits=LIMITS)


@st.cache_data(max_entries=512, show_spinner=False)
def _assess(model_key: str, digests: tuple[str, ...], _predictor: Predictor,
            _images: list[LoadedImage]) -> tuple[np.ndarray, list[list[str]]]:
    return _predictor.assess(_images)


@st.cache_data(max_entries=128, show_spinner="Computing the heatmap…")
def _heatmap(model_key: str, digest: str, class_name: str, method: str, _predictor: Predictor,
             _image: LoadedImage) -> np.ndarray:
    return explain(_predictor, _image, class_name, method)


def _explain_panel(predictor: Predictor, model_key: str, image: LoadedImage, digest: str, ident: str,
                   default_class: str) -> None:
    """Runs as a fragment: moving the opacity slider redraws only this panel."""
    classes = list(predictor.classes)
    c1, c2, c3 = st.columns([2, 1, 2])
    class_name = c1.selectbox("Explain class", classes, index=classes.index(default_class), key=f"cam_class_{ident}")
    method = c2.selectbox("Method", list(METHODS), key=f"cam_method_{ident}",
                          help="Grad-CAM variants; Score-CAM is slow on CPU")
    opacity = c3.slider("Overlay opacity", 0.0, 1.0, 0.4, 0.05, key=f"cam_opacity_{ident}")
    with cxr_errors():
        heat = _heatmap(model_key, digest, class_name, method, predictor, image)
        left, right = st.columns(2)
        left.image(image.pixels, caption="Original", clamp=True, width="stretch")
        right.image(overlay(image.pixels, heat, opacity), caption=f"{method} · {class_name}", width="stretch")
        st.download_button("Download overlay (PNG)", overlay_png(image.pixels, heat, opacity),
                           file_name=f"{image.name.rsplit('.', 1)[0]}_{method}_{class_name.replace(' ', '_')}.png",
                           mime="image/png", key=f"cam_download_{ident}", icon=":material/download:")


explain_panel = st.fragment(_explain_panel)

st.title("Predict")
entry = require_entry()
if entry.external:
    st.info(f"**{entry.name}** holds predictions made by another tool ({entry.card.provenance}); there are no weights "
            "here to score new images with. Its evaluation is on the Performance, Thresholds and Review pages.")
    st.stop()
predictor = state.predictor(entry)
active = state.active_thresholds(entry)
multilabel = predictor.label_space.multilabel
model_key = f"{entry.model_path}:{entry.model_path.stat().st_mtime}"

st.caption(
    f"Model **{entry.name}** ({predictor.architecture}, {len(predictor.classes)} classes) · "
    + (f"thresholds: **{active.name}**" if multilabel else "single most probable class (multiclass)")
)
files = st.file_uploader(
    f"Chest X-rays (PNG, JPEG, BMP, TIFF or DICOM; up to {MAX_MB} MB each)",
    accept_multiple_files=True, key="predict_files", max_upload_size=MAX_MB,
)
if not files:
    st.info("Upload one or more frontal chest radiographs to see the model's findings.")
    st.stop()

images: list[LoadedImage] = []
digests: list[str] = []
for upload in files:
    data = upload.getvalue()
    digest = hashlib.sha1(data).hexdigest()
    try:
        image = _decode(digest, upload.name, data)
        predictor.cache_array(image)  # the input gate refuses blank or too-small images here
        images.append(image)
        digests.append(digest)
    except CXRError as exc:
        st.error(str(exc), icon=":material/error:")
if not images:
    st.stop()

probabilities, warnings = _assess(model_key, tuple(digests), predictor, images)
thresholds = predictor.resolve_thresholds(active.thresholds)
predictions = predictor.to_predictions(probabilities, [im.name for im in images], thresholds, warnings)

table = pd.DataFrame(
    [{"file": p.name, "positive findings": "; ".join(p.positive) or "none", "warnings": " | ".join(p.warnings),
      **p.probabilities} for p in predictions]
)
st.subheader("Results")
st.dataframe(table, hide_index=True, key="predict_table",
             column_config={c: st.column_config.ProgressColumn(c, format="%.3f", min_value=0.0, max_value=1.0)
                            for c in predictor.classes})
csv = io.StringIO()
table.assign(threshold_set=active.name if multilabel else "argmax").to_csv(csv, index=False)
st.download_button("Download results (CSV)", csv.getvalue(), file_name="predictions.csv", mime="text/csv",
                   key="predict_csv", icon=":material/download:")

for position, (image, digest, prediction) in enumerate(zip(images, digests, predictions)):
    ident = f"{position}_{digest[:12]}"  # the same file uploaded twice still gets its own widgets
    st.divider()
    st.subheader(image.name)
    for warning in prediction.warnings:
        st.warning(warning, icon=":material/warning:")
    left, right = st.columns([1, 2])
    left.image(image.pixels, clamp=True, width="stretch")
    with right:
        if prediction.positive:
            st.markdown("**Positive findings:** " + ", ".join(
                f":red[{c}] ({prediction.probabilities[c]:.2f})" for c in prediction.positive))
        else:
            st.markdown("**Positive findings:** none above threshold")
        st.plotly_chart(charts.probability_bars(prediction.probabilities, thresholds if multilabel else {},
                                                prediction.positive), key=f"bars_{ident}")
    top = max(prediction.probabilities, key=prediction.probabilities.get)
    with st.expander("Grad-CAM explanation", expanded=len(images) == 1):
        explain_panel(predictor, model_key, image, digest, ident, top)
