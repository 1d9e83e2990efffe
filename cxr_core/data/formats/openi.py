"""Open-i / Indiana University chest X-ray collection (NLM) -> :class:`Manifest`.

3,955 radiology reports as XML (``NLMCXR_reports.tgz``, or its ``ecgen-radiology/`` folder),
each naming its images (``<parentImage id="CXR1_1_IM-0001-3001">``; the PNG release calls them
``<id>.png``) and indexed with MeSH terms: ``major`` (assigned by the collection's annotators,
e.g. ``Opacity/lung/base/left``) and ``automatic`` (extracted from the report text). One row per
image; the report's uId (``CXR1``) is the patient. Findings are read from the MeSH terms
(``mesh=major``, the default, or ``automatic``) by keyword: a term mentioning a finding's keyword
(:data:`OPENI_KEYWORDS`, so ``pleural effusions`` and ``Pleural Effusion/right`` are both
effusion) makes it positive; ``normal`` is No Finding. The report's findings and impression are
kept as text columns. The view comes from the DICOM header table beside the reports
(``nlmcxr_dicom_metadata.csv``), when there is one.
"""

from __future__ import annotations

import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.data.formats.files import Missing, read_label_csv
from cxr_core.data.formats.locate import attach_paths, first_existing
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.labels import NO_FINDING, LabelSpace
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError

REPORT_ARCHIVES: tuple[str, ...] = ("NLMCXR_reports.tgz", "NLMCXR_reports.tar.gz")
REPORT_FOLDER = "ecgen-radiology"
METADATA_NAMES: tuple[str, ...] = ("nlmcxr_dicom_metadata.csv.gz", "nlmcxr_dicom_metadata.csv")
IMAGE_FOLDERS: tuple[str, ...] = ("NLMCXR_png", "images", "png")
MESH_KINDS: tuple[str, ...] = ("major", "automatic")
# Harmonised finding -> keywords any of its MeSH terms mentions (lower case).
OPENI_KEYWORDS: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "atelectases"),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("consolidation",),
    "Pleural Effusion": ("effusion",),
    "Infiltration": ("infiltration", "infiltrate"),
    "Mass": ("mass",),
    "Nodule": ("nodule",),
    "Pneumonia": ("pneumonia",),
    "Pneumothorax": ("pneumothorax",),
    "Edema": ("edema",),
    "Emphysema": ("emphysema",),
    "Fibrosis": ("fibrosis",),
    "Pleural Thickening": ("pleural thickening", "thickening/pleura"),
    "Hernia": ("hernia",),
    "Lung Lesion": ("lesion",),
    "Fracture": ("fracture",),
    "Lung Opacity": ("opacity",),
    "Granuloma": ("granuloma",),
    "Calcified Granuloma": ("calcified granuloma",),
}
OPENI = LabelSpace("openi", (*OPENI_KEYWORDS, NO_FINDING))
_VIEWS = {"LL": "LATERAL", "RL": "LATERAL", "LARGE LATERAL": "LATERAL"}


def _xml_documents(source: Path) -> Iterator[tuple[str, bytes]]:
    """(name, XML bytes) of every report in the archive or folder, in name order."""
    if source.is_dir():
        for path in sorted(source.rglob("*.xml")):
            yield path.name, path.read_bytes()
        return
    try:
        with tarfile.open(source, "r:*") as archive:
            members = sorted(
                (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")),
                key=lambda m: m.name,
            )
            for member in members:
                handle = archive.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(
            f"{source} cannot be read as a report archive ({exc}); download it again"
        ) from None


def _text(root: ET.Element, label: str) -> str:
    node = root.find(f".//AbstractText[@Label='{label}']")
    return (node.text or "").strip() if node is not None else ""


def read_reports(source: Path) -> pd.DataFrame:
    """One row per image: ``image_id, patient_id, major, automatic, findings, impression``
    (``major``/``automatic``: the report's MeSH terms, lower case, "|"-joined)."""
    rows = []
    for name, data in _xml_documents(source):
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise DatasetError(f"report {name} in {source} is not valid XML ({exc})") from None
        uid = root.find("uId")
        if uid is None or not uid.get("id"):
            raise DatasetError(f"report {name} in {source} has no <uId id=...>")
        mesh = {
            kind: "|".join(
                sorted({(n.text or "").strip().lower() for n in root.findall(f".//MeSH/{kind}")})
            )
            for kind in MESH_KINDS
        }
        texts = {"findings": _text(root, "FINDINGS"), "impression": _text(root, "IMPRESSION")}
        for image in root.findall(".//parentImage"):
            rows.append(
                {"image_id": image.get("id", ""), "patient_id": uid.get("id"), **mesh, **texts}
            )
    if not rows:
        raise DatasetError(f"no report with images in {source}")
    return pd.DataFrame(rows)


def mesh_labels(terms: pd.Series) -> pd.DataFrame:
    """Finding columns from "|"-joined lower-case MeSH terms (keyword in any term; normal = No Finding)."""
    split = terms.fillna("").str.split("|")
    out = {}
    for cls, keywords in OPENI_KEYWORDS.items():
        out[cls] = split.map(lambda ts, kw=keywords: any(k in t for t in ts for k in kw))
    out[NO_FINDING] = split.map(lambda ts: "normal" in ts)
    return pd.DataFrame(out).astype(np.float32)


def _views(root: Path, image_ids: pd.Series) -> pd.Series:
    meta_csv = first_existing(root, METADATA_NAMES)
    if meta_csv is None:
        return pd.Series("", index=image_ids.index)
    meta = read_label_csv(
        meta_csv,
        "Open-i DICOM metadata",
        usecols=["imageid", "View Position"],
        dtype=str,
        keep_default_na=False,
    )
    view = (
        meta.drop_duplicates("imageid")
        .set_index("imageid")["View Position"]
        .str.strip()
        .str.upper()
    )
    return image_ids.map(view.replace(_VIEWS)).fillna("")


def load_openi(
    target: str | Path,
    *,
    mesh: str = "major",
    images_dir: str | Path | None = None,
    check_files: bool = True,
    missing: Missing = "error",
) -> Manifest:
    """Every image of every report, labelled from the report's ``mesh`` terms."""
    if mesh not in MESH_KINDS:
        raise DatasetError(f"mesh must be one of {', '.join(MESH_KINDS)}, not {mesh!r}")
    source = _reports(Path(target))
    root = source.parent
    reports = read_reports(source)
    dup = reports["image_id"].duplicated(keep="first")
    frame = reports[~dup].reset_index(drop=True)
    frame = frame.assign(view=_views(root, frame["image_id"]), split="")
    frame = pd.concat([frame, mesh_labels(frame[mesh])], axis=1)
    frame, dropped = attach_paths(
        frame,
        frame["image_id"],
        root=root,
        images_dir=images_dir,
        candidates=IMAGE_FOLDERS,
        by="stem",
        check_files=check_files,
        missing=missing,
        where=str(source),
        default_suffix=".png",
    )
    text = f"Open-i ({source}; MeSH {mesh} terms)"
    if dup.any():
        text += f"; {int(dup.sum())} images listed by two reports kept once"
    if dropped:
        text += f"; {dropped} rows without an image file dropped"
    return Manifest(frame, OPENI, text)


def _reports(path: Path) -> Path:
    found = _recognise(path)
    if found is None:
        raise DatasetError(
            f"no Open-i reports ({REPORT_ARCHIVES[0]} or {REPORT_FOLDER}/) at {path}"
        )
    return found


def _recognise(path: Path) -> Path | None:
    if path.is_file():
        return path if path.name in REPORT_ARCHIVES else None
    if path.name == REPORT_FOLDER and any(path.glob("*.xml")):
        return path
    archive = first_existing(path, REPORT_ARCHIVES)
    if archive is not None:
        return archive
    folder = path / REPORT_FOLDER
    return folder if folder.is_dir() else None


FORMAT = DatasetFormat(
    name="openi",
    summary="Open-i (Indiana University, NLM): NLMCXR_reports.tgz / ecgen-radiology/*.xml reports with MeSH "
    "terms + NLMCXR_png/<image id>.png, nlmcxr_dicom_metadata.csv; mesh=major|automatic",
    looks_for=f"{REPORT_ARCHIVES[0]} or a {REPORT_FOLDER}/ folder of XML reports",
    recognise=_recognise,
    load=load_openi,
    options=("mesh", "images_dir", "check_files", "missing"),
)
