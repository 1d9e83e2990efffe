"""cxr_core: chest X-ray classification library.

Data flows one way: files -> manifest -> cache -> model -> predictions -> metrics -> pages.
This package never imports Streamlit; the dashboard imports it.
"""

__version__ = "0.1.0"
