"""NLM tuberculosis sets, Montgomery County and Shenzhen (Jaeger et al. 2014) -> :class:`Manifest`
and lung masks.

Released as ``MontgomerySet/`` and ``ChinaSet_AllFiles/``: radiographs in ``CXR_png/``, named
``MCUCXR_0001_0.png`` / ``CHNCXR_0001_0.png`` where the last digit is the label (1 =
tuberculosis), and a ``ClinicalReadings/<same stem>.txt`` per image giving sex, age and the
reading ("Patient's Sex: F / Patient's Age: 040Y" in Montgomery, "male 35yrs" in Shenzhen).
Montgomery ships manual lung masks as ``ManualMask/leftMask/`` and ``ManualMask/rightMask/``
(joined into one mask here); the Shenzhen masks come separately, usually as
``mask/<stem>_mask.png``. A reduced copy as ``images/`` + ``masks/`` with the same names (as in
``../shared/data/lungmasks/montgomery``) is read the same way. The label is ``Tuberculosis``;
each image number is one patient (``MCUCXR_0001``). All films are PA.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.class_folders import list_images
from cxr_core.data.formats.files import first_items
from cxr_core.data.formats.mask_set import LUNG_TARGET, MaskSet
from cxr_core.data.formats.masks import build_mask_set, read_mask
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

IMAGE_FOLDERS: tuple[str, ...] = ("CXR_png", "images")
_NAME = re.compile(r"^((?:MCU|CHN)CXR_\d+)_([01])$", re.IGNORECASE)
NLM_TB = LabelSpace("nlm_tb", ("Tuberculosis",))
_SEX = re.compile(r"(?:sex:\s*([MF]))|\b(female|male)\b", re.IGNORECASE)
_AGE = re.compile(r"(\d+)\s*(?:y\b|yrs?\b|years?\b)", re.IGNORECASE)


def _image_folder(root: Path) -> Path:
    folder = next((root / f for f in IMAGE_FOLDERS if (root / f).is_dir()), None)
    if folder is None:
        raise DatasetError(f"no {' or '.join(IMAGE_FOLDERS)}/ folder in {root}")
    return folder


def _images(root: Path) -> list[Path]:
    folder = _image_folder(root)
    images, _ = list_images(folder)
    odd = [p.name for p in images if not _NAME.match(p.stem)]
    if odd:
        raise DatasetError(
            f"{len(odd)} file(s) in {folder} are not named MCUCXR_NNNN_L / CHNCXR_NNNN_L (L = 0 normal, "
            f"1 tuberculosis): {first_items(odd)}"
        )
    if not images:
        raise DatasetError(f"{folder} holds no images")
    return images


def clinical_reading(path: Path) -> tuple[str, float]:
    """(sex M/F or "", age in years or NaN) from a ClinicalReadings text file."""
    if not path.is_file():
        return "", float("nan")
    text = path.read_text(encoding="utf-8", errors="replace")
    sex = _SEX.search(text)
    age = _AGE.search(text)
    letter = ((sex.group(1) or sex.group(2)) or "")[:1].upper() if sex else ""
    return letter, float(age.group(1)) if age else float("nan")


def load_nlm_tb(target: str | Path) -> Manifest:
    """Tuberculosis labels (from the file names), sex and age (from the clinical readings)."""
    root = Path(target)
    images = _images(root)
    stems = [p.stem for p in images]
    readings = [clinical_reading(root / "ClinicalReadings" / f"{s}.txt") for s in stems]
    frame = pd.DataFrame(
        {
            "image_id": [p.name for p in images],
            "path": [str(p.resolve()) for p in images],
            "patient_id": [_NAME.match(s).group(1).upper() for s in stems],
            "view": "PA",
            "split": "",
            "Tuberculosis": np.array(
                [float(_NAME.match(s).group(2)) for s in stems], dtype=np.float32
            ),
            "sex": [r[0] for r in readings],
            "age": [r[1] for r in readings],
        }
    )
    return Manifest(frame, NLM_TB, f"NLM TB set ({root})")


def _mask_files(root: Path, stem: str, name: str) -> list[Path]:
    """The mask file(s) of one image in whichever of the known layouts holds them."""
    for parts in (("ManualMask/leftMask", "ManualMask/rightMask"), ("masks",)):
        found = [root / part / name for part in parts]
        if all(p.is_file() for p in found):
            return found
    single = root / "mask" / f"{stem}_mask.png"
    return [single] if single.is_file() else []


def load_nlm_tb_masks(target: str | Path, *, size: int | None = None) -> MaskSet:
    """Every image with its lung mask (left and right lung joined)."""
    root = Path(target)
    images = _images(root)
    masks = [_mask_files(root, p.stem, p.name) for p in images]
    absent = [p.name for p, m in zip(images, masks) if not m]
    if absent:
        raise DatasetError(
            f"{len(absent)} image(s) in {root} have no lung mask (ManualMask/leftMask + rightMask, masks/ or "
            f"mask/<name>_mask.png): {first_items(absent)}"
        )
    return build_mask_set(
        root,
        [p.name for p in images],
        [_NAME.match(p.stem).group(1).upper() for p in images],
        images,
        lambda i: np.logical_or.reduce([read_mask(m) for m in masks[i]]),
        size=size,
        target=LUNG_TARGET,
        mask_names=[m[0] for m in masks],
    )


def _recognise(path: Path) -> Path | None:
    if not path.is_dir():
        return None
    for folder in IMAGE_FOLDERS:
        if (path / folder).is_dir():
            names = (p.stem for p in (path / folder).iterdir() if p.is_file())
            return path if any(_NAME.match(n) for n in names) else None
    return None


FORMAT = DatasetFormat(
    name="nlm-tb",
    summary="NLM TB sets (Montgomery, Shenzhen): CXR_png/{MCU,CHN}CXR_NNNN_L.png (L = 1 tuberculosis), "
    "ClinicalReadings/*.txt, ManualMask/{left,right}Mask/ or masks/; lung masks",
    looks_for="a folder with CXR_png/ (or images/) of MCUCXR_NNNN_L / CHNCXR_NNNN_L images",
    recognise=_recognise,
    load=load_nlm_tb,
    load_masks=load_nlm_tb_masks,
)
