"""Dashboard entry point: ``streamlit run streamlit_app.py``.

Streamlit serves ``app_pages/router.py`` (the page router and the sidebar every page shares);
this file only adds :class:`dashboard.server.PageRootMiddleware`, so a page URL opened directly
(``/performance``, a bookmark) connects at once instead of after two 404s. Checkpoints are looked
for in ``checkpoints/`` (or the folders in ``CXR_CHECKPOINT_DIRS``); review verdicts go to
``CXR_REVIEW_DIR``.
"""

from __future__ import annotations

import streamlit as st
from starlette.middleware import Middleware

from dashboard.server import PageRootMiddleware

app = st.App("app_pages/router.py", middleware=[Middleware(PageRootMiddleware)])
