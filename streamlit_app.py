"""Dashboard entry point: page router plus the sidebar model picker shared by every page.

Run with ``streamlit run streamlit_app.py``. Checkpoints are looked for in ``checkpoints/``
(or the folders in ``CXR_CHECKPOINT_DIRS``); review verdicts go to ``CXR_REVIEW_DIR``.
"""

from __future__ import annotations

import streamlit as st

from cxr_core.errors import CXRError
from dashboard.widgets import PAGE_ICON, model_picker, reader_box

st.set_page_config(page_title="CXR classifier dashboard", page_icon=str(PAGE_ICON), layout="wide")

PAGES = [
    st.Page("app_pages/predict.py", title="Predict", icon=":material/upload_file:", default=True),
    st.Page("app_pages/performance.py", title="Performance", icon=":material/monitoring:"),
    st.Page("app_pages/thresholds.py", title="Thresholds", icon=":material/tune:"),
    st.Page("app_pages/review.py", title="Review", icon=":material/fact_check:"),
    st.Page("app_pages/worklist.py", title="Worklist", icon=":material/format_list_numbered:"),
    st.Page("app_pages/models.py", title="Models", icon=":material/description:"),
]

page = st.navigation(PAGES)
reader_box()
model_picker()
st.sidebar.caption("Research and education only: not a medical device, not for diagnosis.")
try:
    page.run()
except CXRError as exc:
    st.error(str(exc), icon=":material/error:")
