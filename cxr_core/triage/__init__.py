"""The triage worklist: many films scored in the background, cached, sorted by how abnormal they look.

``items.py`` (films from a folder or an upload, read on demand), ``cache.py`` (scores on disk by
content hash and model checksums), ``job.py`` (the background scoring), ``table.py`` (calls,
critical flags, order and filters). PACS studies become items in :mod:`cxr_core.pacs.worklist`.
"""
