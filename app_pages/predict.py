"""Predict: upload radiographs; read each one's findings beside the film viewer (window/level,
heatmaps, the lungs); the batch table fills in below while you read."""

from __future__ import annotations

import streamlit as st

from dashboard import predict_batch, predict_view, state
from dashboard.widgets import require_entry

st.title("Predict")
entry = require_entry()
if entry.external:
    st.info(
        f"**{entry.name}** holds predictions made by another tool ({entry.card.provenance}); there are no weights "
        "here to score new images with. Its evaluation is on the Performance, Thresholds and Review pages."
    )
    st.stop()
ctx = predict_batch.context(entry)
st.caption(predict_view.model_text(ctx))
files = predict_view.uploader()
if not files:
    st.info("Upload one or more frontal chest radiographs to see the model's findings.")
    st.stop()

batch = predict_batch.uploads(files)
position = predict_view.film_picker(batch)
film = predict_batch.read_film(batch[position], ctx)
state.film_viewed(film.name, "Predict", sha1=film.upload.digest[:12])  # audited once per session
left, right = st.columns([2, 3], gap="medium")
with left:
    predict_view.findings_panel(film, ctx)
with right:
    predict_view.viewer_panel(film, ctx)
predict_view.batch_section(batch, ctx, film, position)
with st.expander("How to read these results"):
    st.markdown(predict_view.how_to_read(ctx))
