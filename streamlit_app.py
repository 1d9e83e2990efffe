"""Dashboard entry point: ``streamlit run streamlit_app.py``.

Streamlit serves ``app_pages/router.py`` (the page router and the sidebar every page shares;
before any page runs it signs the user in, :func:`dashboard.auth.require_user`). This file adds
two pieces of middleware to the web server: :class:`dashboard.client_guard.ClientGuard` first,
refusing connections the sign-in settings do not accept before Streamlit sees them (a local
install: any other computer or a proxy; proxy mode: any address but the trusted proxies), then
:class:`dashboard.server.PageRootMiddleware`, so a page URL opened directly (``/performance``, a
bookmark) connects at once instead of after two 404s. Checkpoints are looked for in
``checkpoints/`` (or the folders in ``CXR_CHECKPOINT_DIRS``); review verdicts go to
``CXR_REVIEW_DIR``.
"""

from __future__ import annotations

import streamlit as st
from starlette.middleware import Middleware

from dashboard.client_guard import ClientGuard
from dashboard.server import PageRootMiddleware

app = st.App(
    "app_pages/router.py", middleware=[Middleware(ClientGuard), Middleware(PageRootMiddleware)]
)
