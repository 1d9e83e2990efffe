"""Dataset adapters: every on-disk format becomes one :class:`cxr_core.data.manifest.Manifest`.

Each adapter module defines its ``FORMAT`` (:class:`~cxr_core.data.formats.registry.DatasetFormat`);
they are registered here in detection order, so the order is visible in one place: layouts that
are special cases of others come first (the NIH expert labels are an NIH file with four more
columns; a TB set's ``images/`` + ``masks/`` is also a plain image+mask folder).
"""

from cxr_core.data.formats import (
    chexpert,
    class_folders,
    covid_radiography,
    disease_folders,
    masks,
    mimic,
    nih,
    nih_expert,
    nlm_tb,
    openi,
    padchest,
    rsna,
    siim,
    vindr,
)
from cxr_core.data.formats.chexpert import load_chexpert
from cxr_core.data.formats.class_folders import load_class_folders
from cxr_core.data.formats.disease_folders import load_disease_folders
from cxr_core.data.formats.nih import load_nih
from cxr_core.data.formats.registry import (
    AUTO,
    DatasetFormat,
    detect_format,
    get_format,
    list_formats,
    load_box_table,
    load_dataset,
    load_mask_set,
    register_format,
)

for _adapter in (
    nih_expert,
    nih,
    chexpert,
    mimic,
    padchest,
    rsna,
    siim,
    vindr,
    openi,
    nlm_tb,
    covid_radiography,
    disease_folders,
    class_folders,
    masks,
):
    register_format(_adapter.FORMAT)

__all__ = [
    "AUTO",
    "DatasetFormat",
    "detect_format",
    "get_format",
    "list_formats",
    "load_box_table",
    "load_chexpert",
    "load_class_folders",
    "load_dataset",
    "load_disease_folders",
    "load_mask_set",
    "load_nih",
    "register_format",
]
