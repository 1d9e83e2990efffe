"""Streamlit-only helpers shared by the dashboard pages.

``cxr_core`` never imports Streamlit; everything that needs ``st`` (caching, session state,
sidebar widgets) lives here, and every number shown comes from ``cxr_core``.
"""
