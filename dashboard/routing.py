"""Every page URL goes through the router, also as the first request to a fresh server.

Streamlit decides per process whether an app is a "pages/ folder" app: until some script run
has called ``st.navigation``, a request for ``/performance`` runs ``pages/performance.py`` on
its own, with Streamlit's automatic file list and without the router's layout, model picker
and disclaimer. The dashboard's ``pages/`` folder must stay next to ``streamlit_app.py``, so
instead the first import of :mod:`dashboard` (which every page does before drawing anything)
switches that mode off and reruns the request; the rerun starts at ``streamlit_app.py``,
whose ``st.navigation`` then opens the requested page.
"""

from __future__ import annotations

from pathlib import Path

MAIN_SCRIPT = Path(__file__).resolve().parents[1] / "streamlit_app.py"


def route_through_main_script() -> None:
    """Rerun a page started on its own under the router (no-op outside a Streamlit server run,
    for AppTest runs of a single page file, and once any run has used ``st.navigation``)."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not PagesManager.uses_pages_directory:
        return
    if Path(ctx.main_script_path).resolve() != MAIN_SCRIPT:
        return
    PagesManager.uses_pages_directory = False
    st.rerun()
