"""PadChest (BIMCV, Bustos et al. 2020) -> :class:`Manifest`.

``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv`` lists 160,861 images of 67,625
patients: ``ImageID`` (the PNG's name, under the ``ImageDir`` folder ``0/`` ... ``54/``),
``PatientID``, ``PatientBirth``, ``PatientSex_DICOM``, ``Projection`` (PA, AP, AP_horizontal =
AP supine, L = lateral, COSTAL, EXCLUDE, UNK), ``Pediatric``, ``MethodLabel`` (``Physician``: a
radiologist labelled the report; ``RNN_model``: a network trained on those labels did) and
``Labels``, a Python-style list of lower-case terms (174 findings, 19 diagnoses).

The terms are mapped to harmonised findings by :data:`PADCHEST_TERMS` (every term listed: no
substring matching, so ``pseudonodule`` is not a nodule and ``subcutaneous emphysema`` not
emphysema); ``normal`` is No Finding. A finding not among an image's terms is negative; an image
whose ``Labels`` cell is empty is unknown for every finding. ``labels=physician`` (or ``rnn``)
keeps the images labelled that way; ``pediatric=false`` leaves out the pediatric ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import Missing, csv_rows, read_label_csv
from cxr_core.data.formats.locate import attach_paths, first_existing, label_csv_header
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import NO_FINDING, LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

CSV_NAMES: tuple[str, ...] = (
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv",
    "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("ImageID", "PatientID", "Projection", "MethodLabel", "Labels")
IMAGE_FOLDERS: tuple[str, ...] = ("images", "[0-9]*")
# Harmonised finding -> the PadChest terms that mean it (the findings torchxrayvision reads, spelt
# canonically; "Tube" and "Support Devices" split as there).
PADCHEST_TERMS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (
        "atelectasis",
        "laminar atelectasis",
        "lobar atelectasis",
        "segmental atelectasis",
        "atelectasis basal",
        "total atelectasis",
        "round atelectasis",
    ),
    "Consolidation": ("consolidation", "air bronchogram"),
    "Infiltration": (
        "infiltrates",
        "interstitial pattern",
        "ground glass pattern",
        "reticular interstitial pattern",
        "reticulonodular interstitial pattern",
        "alveolar pattern",
        "consolidation",
        "air bronchogram",
    ),
    "Pneumothorax": ("pneumothorax", "hydropneumothorax"),
    "Edema": ("pulmonary edema",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("pulmonary fibrosis",),
    "Pleural Effusion": (
        "pleural effusion",
        "loculated pleural effusion",
        "loculated fissural effusion",
    ),
    "Pneumonia": ("pneumonia", "atypical pneumonia"),
    "Pleural Thickening": (
        "pleural thickening",
        "apical pleural thickening",
        "calcified pleural thickening",
    ),
    "Cardiomegaly": ("cardiomegaly",),
    "Nodule": ("nodule", "multiple nodules"),
    "Mass": ("mass", "pulmonary mass", "mediastinal mass", "pleural mass"),
    "Hernia": ("hiatal hernia",),
    "Fracture": (
        "fracture",
        "callus rib fracture",
        "rib fracture",
        "vertebral fracture",
        "clavicle fracture",
        "humeral fracture",
    ),
    "Granuloma": ("granuloma", "calcified granuloma"),
    "Flattened Diaphragm": ("flattened diaphragm",),
    "Bronchiectasis": ("bronchiectasis",),
    "Aortic Elongation": (
        "aortic elongation",
        "supra aortic elongation",
        "descendent aortic elongation",
        "ascendent aortic elongation",
    ),
    "Scoliosis": ("scoliosis",),
    "Hilar Enlargement": (
        "hilar enlargement",
        "vascular hilar enlargement",
        "adenopathy",
        "calcified adenopathy",
        "calcified mediastinal adenopathy",
        "pulmonary artery enlargement",
    ),
    "Tuberculosis": ("tuberculosis", "tuberculosis sequelae"),
    "Air Trapping": ("air trapping",),
    "Costophrenic Angle Blunting": ("costophrenic angle blunting",),
    "Aortic Atheromatosis": ("aortic atheromatosis",),
    "Hemidiaphragm Elevation": ("hemidiaphragm elevation",),
    "Support Devices": (
        "pacemaker",
        "dual chamber device",
        "single chamber device",
        "electrical device",
    ),
    "Tube": (
        "NSG tube",
        "endotracheal tube",
        "tracheostomy tube",
        "chest drain tube",
        "ventriculoperitoneal drain tube",
        "gastrostomy tube",
        "nephrostomy tube",
        "double J stent",
    ),
    NO_FINDING: ("normal",),
}
PADCHEST = LabelSpace("padchest", tuple(PADCHEST_TERMS))
VIEWS = {
    "PA": "PA",
    "AP": "AP",
    "AP_HORIZONTAL": "AP SUPINE",
    "L": "LATERAL",
    "COSTAL": "COSTAL",
    "UNK": "",
}
METHODS = {"all": None, "physician": "Physician", "rnn": "RNN_model"}


def _parse(text: str) -> frozenset[str] | None:
    try:
        terms = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return None
    return frozenset(str(t).strip() for t in terms) if isinstance(terms, list) else None


def _label_matrix(labels: pd.Series, image_ids: pd.Series, csv: Path) -> pd.DataFrame:
    """Finding columns from the term lists, each distinct list parsed once (160k rows, ~40k lists)."""
    codes, uniques = pd.factorize(labels.fillna(""))
    term_sets = [_parse(text) for text in uniques]
    bad = [i for i, terms in enumerate(term_sets) if terms is None]
    if bad:
        frame = pd.DataFrame({"image_id": image_ids})
        raise DatasetError(
            f"{csv.name}: Labels is not a list of terms (['normal'], ['pneumonia', 'nodule']) at "
            f"{csv_rows(frame, np.isin(codes, bad))}"
        )
    per_set = np.array(
        [
            [bool(terms & set(PADCHEST_TERMS[cls])) for cls in PADCHEST.classes]
            for terms in term_sets
        ],
        dtype=np.float32,
    ).reshape(len(term_sets), len(PADCHEST.classes))
    values = per_set[codes]
    values[labels.isna().to_numpy()] = np.nan  # no labels at all: unknown, not negative
    return pd.DataFrame(values, columns=list(PADCHEST.classes), index=labels.index)


def _read_rows(csv: Path, labels: str, pediatric: bool) -> pd.DataFrame:
    """The label file's rows, kept by labelling method and pediatric flag, with a ``pediatric`` column."""
    if labels not in METHODS:
        raise DatasetError(f"labels must be one of {', '.join(METHODS)}, not {labels!r}")
    header = label_csv_header(csv)
    absent = [c for c in REQUIRED_COLUMNS if c not in header]
    if absent:
        raise DatasetError(
            f"{csv.name} lacks {absent}; PadChest label files have {', '.join(REQUIRED_COLUMNS)}"
        )
    raw = read_label_csv(csv, "PadChest label file", dtype=str, keep_default_na=True)
    raw.columns = header
    flag = raw.get("Pediatric", pd.Series("", index=raw.index)).fillna("").str.strip().str.upper()
    raw["pediatric"] = flag == "PED"
    keep = pd.Series(True, index=raw.index) if pediatric else ~raw["pediatric"]
    if METHODS[labels]:
        keep &= raw["MethodLabel"].str.strip() == METHODS[labels]
    return raw[keep].reset_index(drop=True)


def load_padchest(
    csv: str | Path,
    *,
    labels: str = "all",
    pediatric: bool = True,
    images_dir: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Every image of the label file (``labels``: all, physician or rnn; ``pediatric``: keep them)."""
    csv = Path(csv)
    raw = _read_rows(csv, labels, pediatric)
    projection = raw["Projection"].fillna("").str.strip().str.upper()
    frame = pd.DataFrame(
        {
            "image_id": raw["ImageID"].str.strip(),
            "patient_id": raw["PatientID"].str.strip(),
            "view": projection.map(VIEWS).fillna(projection),
            "split": "",
        }
    )
    frame = pd.concat([frame, _label_matrix(raw["Labels"], frame["image_id"], csv)], axis=1)
    frame = frame.assign(**_metadata_columns(raw))
    frame, dropped = attach_paths(
        frame,
        frame["image_id"],
        root=csv.parent,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="name",
        check_files=check_files,
        missing=missing,
        where=str(csv),
    )
    source = f"PadChest ({csv}; labels: {labels}{'' if pediatric else '; no pediatric images'})"
    if dropped:
        source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, PADCHEST, source)


def _metadata_columns(raw: pd.DataFrame) -> dict[str, pd.Series]:
    """Age at the study (years), sex, the labelling method and the pediatric flag."""
    study_year = pd.to_numeric(
        raw.get("StudyDate_DICOM", pd.Series(dtype=str)).str[:4], errors="coerce"
    )
    birth = pd.to_numeric(raw.get("PatientBirth", pd.Series(dtype=str)), errors="coerce")
    sex = (
        raw.get("PatientSex_DICOM", pd.Series("", index=raw.index))
        .fillna("")
        .str.strip()
        .str.upper()
    )
    return {
        "age": (study_year - birth).reindex(raw.index),
        "sex": sex.where(sex.isin(["M", "F"]), ""),
        "label_method": raw["MethodLabel"].fillna("").str.strip(),
        "pediatric": raw["pediatric"],
    }


def _recognise(path: Path) -> Path | None:
    candidate = path if path.is_file() else first_existing(path, CSV_NAMES)
    if candidate is None:
        return None
    header = label_csv_header(candidate)
    return candidate if all(c in header for c in REQUIRED_COLUMNS) else None


FORMAT = DatasetFormat(
    name="padchest",
    summary="PadChest: PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv (ImageID, ImageDir, PatientID, "
    "Projection, Pediatric, MethodLabel, Labels list) + <ImageDir>/<ImageID>.png; labels=physician|rnn, "
    "pediatric=false",
    looks_for="a CSV with columns " + ", ".join(REQUIRED_COLUMNS),
    recognise=_recognise,
    load=load_padchest,
    options=("labels", "pediatric", "images_dir", "check_files", "missing"),
)
