"""Dataset adapters: every on-disk format becomes one :class:`cxr_core.data.manifest.Manifest`."""

from cxr_core.data.formats.chexpert import load_chexpert
from cxr_core.data.formats.class_folders import load_class_folders
from cxr_core.data.formats.detect import FORMATS, detect_format, load_dataset
from cxr_core.data.formats.disease_folders import load_disease_folders
from cxr_core.data.formats.nih import load_nih

__all__ = [
    "FORMATS",
    "detect_format",
    "load_chexpert",
    "load_class_folders",
    "load_dataset",
    "load_disease_folders",
    "load_nih",
]
