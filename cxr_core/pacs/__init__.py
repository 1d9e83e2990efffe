"""The PACS link: a DICOMweb server (Orthanc, a hospital PACS) queried, read and written back.

``config.py`` (where the server is, credentials, TLS), ``client.py`` (QIDO-RS / WADO-RS /
STOW-RS in terms of studies and films), ``roundtrip.py`` (score a study's films and store the
SR, overlay and lung SEG back into the same study), ``worklist.py`` (a study query as the
triage worklist's items).
"""
