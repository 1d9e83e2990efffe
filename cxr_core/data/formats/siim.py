"""SIIM-ACR Pneumothorax Segmentation (2019) -> :class:`Manifest` and pneumothorax masks.

``train-rle.csv`` lists ``ImageId`` and `` EncodedPixels`` (the header really has a leading
space): ``-1`` for an image without pneumothorax, else a run-length encoded 1024x1024 mask, one
row per region when an image has several. Images are ``<ImageId>.dcm`` in nested
study/series folders (``dicom-images-train/``). The label is ``Pneumothorax`` (any region); the
``regions`` column counts them. The stage-1 file encodes each run's start relative to the end of
the previous run; the stage-2 file (``stage_2_train.csv``, column ``EncodedPixels``) uses
standard 1-based absolute starts. Both run down the columns (Fortran order). ``rle=`` overrides
the encoding read from the header. View, age and sex come from the DICOM headers when the images
are checked. ``ImageId`` identifies the image; the release gives no other patient key, so it is
the patient id too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from cxr_core.data.formats.dicom_headers import read_dicom_headers, with_header_columns
from cxr_core.data.formats.files import Missing, csv_rows, read_label_csv
from cxr_core.data.formats.locate import attach_paths, first_existing, label_csv_header, label_file
from cxr_core.data.formats.mask_set import MaskSet
from cxr_core.data.formats.masks import build_mask_set
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

Encoding = Literal["auto", "relative", "absolute"]
LABEL_NAMES: tuple[str, ...] = (
    "train-rle.csv",
    "siim-pneumothorax-train-rle.csv.gz",
    "stage_2_train.csv",
)
IMAGE_FOLDERS: tuple[str, ...] = ("dicom-images-train", "stage_2_images", "images", "train")
MASK_SIZE = 1024  # the release's masks are 1024 x 1024, like its images
SIIM_ACR = LabelSpace("siim_acr", ("Pneumothorax",))
PNEUMOTHORAX_TARGET = "pneumothorax"
_RLE_COLUMNS = {" EncodedPixels": "relative", "EncodedPixels": "absolute"}


def _read(csv: Path, rle: Encoding) -> tuple[pd.DataFrame, str]:
    """Rows as ``image_id, rle`` and the encoding the file uses."""
    raw_header = label_csv_header(csv, strip=False)
    column = next((c for c in _RLE_COLUMNS if c in raw_header), None)
    if "ImageId" not in raw_header or column is None:
        raise DatasetError(
            f"{csv.name} lacks ImageId and EncodedPixels; SIIM-ACR files have 'ImageId, EncodedPixels' "
            "(stage 1 with a space before EncodedPixels)"
        )
    if rle not in ("auto", "relative", "absolute"):
        raise DatasetError(f"rle must be auto, relative or absolute, not {rle!r}")
    raw = read_label_csv(csv, "SIIM-ACR label file", dtype=str, keep_default_na=False)
    rows = pd.DataFrame({"image_id": raw["ImageId"].str.strip(), "rle": raw[column].str.strip()})
    bad = rows["rle"] == ""
    if bad.any():
        raise DatasetError(
            f"{csv.name}: empty EncodedPixels (write -1 for no pneumothorax) at {csv_rows(rows, bad)}"
        )
    return rows, _RLE_COLUMNS[column] if rle == "auto" else rle


def decode_rle(text: str, encoding: str, size: int = MASK_SIZE) -> np.ndarray:
    """One region's run lengths as a bool ``(size, size)`` mask; ``-1`` is an empty mask."""
    flat = np.zeros(size * size, dtype=bool)
    if text.strip() == "-1":
        return flat.reshape(size, size)
    numbers = np.array(text.split(), dtype=np.int64)
    if numbers.size % 2:
        raise DatasetError(
            f"run-length code with an odd count of numbers ({numbers.size}): {text[:40]}..."
        )
    starts, lengths = numbers[0::2], numbers[1::2]
    if encoding == "relative":  # each start counts from the end of the previous run
        ends = np.cumsum(starts + lengths)
        starts = ends - lengths
    else:
        starts = starts - 1
    if starts.size and (starts.min() < 0 or (starts + lengths).max() > flat.size):
        raise DatasetError(f"run-length code reaches outside a {size}x{size} mask: {text[:40]}...")
    for start, length in zip(starts, lengths):
        flat[start : start + length] = True
    return flat.reshape(size, size).T  # runs go down the columns


def load_siim(
    target: str | Path,
    *,
    images_dir: str | Path | None = None,
    rle: Encoding = "auto",
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Pneumothorax labels (and region counts) of every image the file lists."""
    csv = _label_file(Path(target))
    rows, _ = _read(csv, rle)
    positive = rows["rle"] != "-1"
    per_image = positive.groupby(rows["image_id"], sort=False)
    frame = pd.DataFrame({"image_id": per_image.any().index, "view": "", "split": ""})
    frame["patient_id"] = frame["image_id"]
    frame["Pneumothorax"] = per_image.any().to_numpy(dtype=np.float32)
    frame["regions"] = per_image.sum().to_numpy(dtype=np.int64)
    frame, dropped = attach_paths(
        frame,
        frame["image_id"],
        root=csv.parent,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="stem",
        check_files=check_files,
        missing=missing,
        where=str(csv),
        default_suffix=".dcm",
    )
    if check_files:
        frame = with_header_columns(frame, read_dicom_headers(frame["path"]))
    source = f"SIIM-ACR Pneumothorax ({csv})"
    if dropped:
        source += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, SIIM_ACR, source)


def load_siim_masks(
    target: str | Path,
    *,
    size: int | None = None,
    images_dir: str | Path | None = None,
    rle: Encoding = "auto",
    positives_only: bool = False,
    missing: Missing = "drop",
) -> MaskSet:
    """Every image with its pneumothorax mask (the union of its regions; empty for negatives, which
    a segmentation model needs to learn to draw nothing); ``positives_only`` keeps the others out.
    Images without a file are dropped by default (a downloaded subset)."""
    csv = _label_file(Path(target))
    rows, encoding = _read(csv, rle)
    if positives_only:
        rows = rows[rows["image_id"].isin(rows.loc[rows["rle"] != "-1", "image_id"])]
    codes = rows.groupby("image_id", sort=True)["rle"].apply(list)
    frame = pd.DataFrame({"image_id": codes.index})
    frame, _ = attach_paths(
        frame,
        frame["image_id"],
        root=csv.parent,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="stem",
        check_files=True,
        missing=missing,
        where=str(csv),
        default_suffix=".dcm",
    )
    ids = frame["image_id"].tolist()

    def mask_of(i: int) -> np.ndarray:
        masks = [decode_rle(code, encoding) for code in codes[ids[i]]]
        return np.logical_or.reduce(masks)

    return build_mask_set(
        csv.parent, ids, ids, frame["path"].tolist(), mask_of, size=size, target=PNEUMOTHORAX_TARGET
    )


def _label_file(path: Path) -> Path:
    return label_file(path, LABEL_NAMES, "SIIM-ACR")


def _recognise(path: Path) -> Path | None:
    candidate = path if path.is_file() else first_existing(path, LABEL_NAMES)
    if candidate is None:
        return None
    header = label_csv_header(candidate, strip=False)
    return candidate if "ImageId" in header and any(c in header for c in _RLE_COLUMNS) else None


FORMAT = DatasetFormat(
    name="siim-acr",
    summary="SIIM-ACR Pneumothorax: train-rle.csv (ImageId, EncodedPixels run lengths, -1 = none, one row "
    "per region) + dicom-images-train/**/<ImageId>.dcm; pneumothorax masks",
    looks_for="a CSV with columns ImageId and EncodedPixels (train-rle.csv, stage_2_train.csv)",
    recognise=_recognise,
    load=load_siim,
    load_masks=load_siim_masks,
    options=("images_dir", "rle", "check_files", "missing"),
    mask_options=("images_dir", "rle", "positives_only", "missing"),
)
