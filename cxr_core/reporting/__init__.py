"""Results where clinicians look: DICOM SR / Secondary Capture / SEG objects and a one-page PDF.

One scored film becomes a :class:`~cxr_core.reporting.study.StudyResult` (its findings, the input
gate's outcome, the model that made them, the overlay and lung mask); the modules here turn
that one value into each deliverable, so the SR, the overlay, the PDF and the worklist can never
disagree about a number.
"""
