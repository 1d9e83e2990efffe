"""The library's version: recorded in every model card and shown by ``cxr --version``."""

__version__ = "0.1.0"
