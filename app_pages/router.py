"""The page router plus the sidebar every page shares (reader, model picker) and the notice of a
changed default threshold set. ``streamlit_app.py`` serves it.

Every page has its own address: ``/predict``, ``/performance``, ``/thresholds``, ``/review``,
``/worklist``, ``/models``; the bare root opens Predict at ``/predict``, so a link to Predict looks
like the others and the menu marks it.

Before any page runs, :func:`dashboard.auth.require_user` signs the user in (or, on a local install
with no sign-in, refuses every other computer): until then no page runs or is listed. The Users
and Audit log pages are listed for admins only.
"""

from __future__ import annotations

import streamlit as st

from cxr_core.access import roles
from cxr_core.errors import CXRError
from dashboard.auth import require_user
from dashboard.widgets import (
    PAGE_ICON,
    compact_layout,
    default_change_notice,
    model_picker,
    reader_box,
)

st.set_page_config(page_title="CXR classifier dashboard", page_icon=str(PAGE_ICON), layout="wide")

PREDICT = st.Page("predict.py", title="Predict", icon=":material/upload_file:", url_path="predict")


def _open_predict() -> None:
    """The root address: Predict, at its own address, keeping the reader in the URL."""
    st.switch_page(PREDICT, query_params=st.query_params.to_dict())


PAGES = [
    st.Page(_open_predict, title="Start", url_path="start", default=True, visibility="hidden"),
    PREDICT,
    st.Page("performance.py", title="Performance", icon=":material/monitoring:"),
    st.Page("thresholds.py", title="Thresholds", icon=":material/tune:"),
    st.Page("review.py", title="Review", icon=":material/fact_check:"),
    st.Page("worklist.py", title="Worklist", icon=":material/format_list_numbered:"),
    st.Page("models.py", title="Models", icon=":material/description:"),
]

user = require_user(PAGES)  # nobody signed in: the sign-in page, and nothing below runs
if user.may(roles.MANAGE_USERS):
    PAGES.append(st.Page("users.py", title="Users", icon=":material/group:"))
if user.may(roles.READ_AUDIT):
    PAGES.append(st.Page("audit.py", title="Audit log", icon=":material/history:"))

page = st.navigation(PAGES)
compact_layout()
reader_box()
entry = model_picker()
st.sidebar.caption("Research and education only: not a medical device, not for diagnosis.")
default_change_notice(entry)
try:
    page.run()
except CXRError as exc:
    st.error(str(exc), icon=":material/error:")
