"""Generated inputs that are not chest radiographs, written as the files a user could drop in.

Every kind the input gate must refuse, seeded so a run is repeatable and files written as
PNG / JPEG / DICOM so they take the same path as a user's upload (``load_image``):

* ``noise``: uniform, Gaussian, salt-and-pepper, colour and blurred noise;
* ``blank``: constant frames, near-constant ones, a blank page with a thin frame;
* ``gradient``: linear and radial ramps, gray and colour;
* ``photo``: smooth colour scenes (sky, horizon, sun, coloured shapes), saved as JPEG;
* ``document``: text pages rendered with Pillow (paragraphs, tables, a dark terminal);
* ``dicom``: crafted DICOMs of other modalities and body parts (a CT-like slice, MR, an
  ultrasound fan, nuclear-medicine blobs, a scanned document, a hand) and chest headers
  around non-chest pixels;
* ``pydicom``: every image in pydicom's own test files that the loader reads.

Used by ``benchmarks/bench_ood.py`` (the measured refusal rate) and the tests; it imports no
``cxr_core`` so the benchmark can measure any version of the library.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

KINDS = ("noise", "blank", "gradient", "photo", "document", "dicom", "pydicom")
PYDICOM_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
_WORDS = (
    "patient report page invoice total date signature clinic dose scan order lorem ipsum dolor "
    "sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore "
    "magna aliqua result normal value reference range units"
).split()


@dataclass(frozen=True)
class HostileCase:
    """One generated file and the kind of input it stands for."""

    kind: str
    path: Path


def _size(rng: np.random.Generator, low: int = 256, high: int = 1400) -> tuple[int, int]:
    """(height, width) with a chest-film-like aspect, so only the content can give it away."""
    height = int(rng.integers(low, high))
    return height, int(height * rng.uniform(0.75, 1.3))


def _to8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- pixel makers


def _noise(rng: np.random.Generator) -> Image.Image:
    shape = _size(rng)
    variant = int(rng.integers(5))
    if variant == 0:
        pixels = rng.random(shape)
    elif variant == 1:
        pixels = rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.05, 0.3), shape)
    elif variant == 2:
        pixels = np.full(shape, rng.uniform(0.2, 0.8))
        spots = rng.random(shape)
        pixels[spots < 0.05], pixels[spots > 0.95] = 0.0, 1.0
    elif variant == 3:
        return Image.fromarray(_to8(rng.random((*shape, 3))), "RGB")
    else:
        small = rng.random((shape[0] // 16 + 1, shape[1] // 16 + 1))
        blurred = Image.fromarray(_to8(small)).resize(shape[::-1], Image.BICUBIC)
        return blurred.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 12))))
    return Image.fromarray(_to8(pixels))


def _blank(rng: np.random.Generator) -> Image.Image:
    shape = _size(rng)
    level = rng.uniform(0, 1)
    variant = int(rng.integers(3))
    if variant == 0:
        return Image.fromarray(_to8(np.full(shape, level)))
    if variant == 1:
        return Image.fromarray(_to8(level + rng.normal(0, 0.004, shape)))
    image = Image.new("L", shape[::-1], int(level * 255))
    ImageDraw.Draw(image).rectangle(
        [2, 2, shape[1] - 3, shape[0] - 3], outline=int((1 - level) * 255), width=1
    )
    return image


def _gradient(rng: np.random.Generator) -> Image.Image:
    shape = _size(rng)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    yy, xx = yy / shape[0], xx / shape[1]
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
    else:
        cy, cx = rng.uniform(0.2, 0.8, 2)
        ramp = np.hypot(yy - cy, xx - cx)
    ramp = (ramp - ramp.min()) / np.ptp(ramp)
    ramp = ramp ** rng.uniform(0.5, 2.0)
    if rng.random() < 0.5:
        return Image.fromarray(_to8(ramp))
    start, stop = rng.random(3), rng.random(3)
    return Image.fromarray(_to8(start + ramp[..., None] * (stop - start)), "RGB")


def _photo(rng: np.random.Generator) -> Image.Image:
    """A smooth colour scene: sky over ground, a sun, a few coloured shapes, softly blurred."""
    height, width = _size(rng, 300, 1400)
    horizon = rng.uniform(0.35, 0.7)
    yy = np.linspace(0, 1, height)[:, None, None]
    sky_top, sky_low = rng.uniform([0.1, 0.3, 0.6], [0.4, 0.7, 1.0]), rng.uniform(0.6, 1.0, 3)
    ground = rng.uniform([0.1, 0.3, 0.0], [0.5, 0.7, 0.3])
    sky = sky_top + (sky_low - sky_top) * (yy / horizon)
    land = ground * (1.2 - 0.4 * (yy - horizon))
    canvas = np.where(yy < horizon, sky, land) * np.ones((1, width, 1))
    image = Image.fromarray(_to8(canvas), "RGB")
    draw = ImageDraw.Draw(image)
    sun = rng.uniform([0.1, 0.05], [0.9, horizon * 0.6]) * [width, height]
    radius = rng.uniform(0.04, 0.1) * width
    draw.ellipse([*(sun - radius), *(sun + radius)], fill=(255, 230, int(rng.integers(80, 200))))
    for _ in range(int(rng.integers(3, 9))):
        box = np.sort(rng.uniform(0, 1, (2, 2)), axis=0) * [width, height]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([*box[0], *box[1]], fill=colour)
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 6))))


def _document(rng: np.random.Generator) -> Image.Image:
    """A page of text: paragraphs, maybe a table, in black on paper or light on a dark screen."""
    height = int(rng.integers(500, 1600))
    width = int(height * rng.uniform(0.7, 1.0))
    dark = rng.random() < 0.25
    paper, ink = (int(rng.integers(0, 40)), 220) if dark else (int(rng.integers(225, 256)), 20)
    image = Image.new("L", (width, height), paper)
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(12, 28))
    font = ImageFont.load_default(size=size)
    title = ImageFont.load_default(size=size * 2)
    margin = int(width * rng.uniform(0.05, 0.12))
    draw.text((margin, margin), " ".join(rng.choice(_WORDS, 3)).upper(), fill=ink, font=title)
    y = margin + size * 3
    table = rng.random() < 0.4
    while y < height - margin - size:
        if table and rng.random() < 0.3:
            draw.line([margin, y, width - margin, y], fill=ink, width=1)
        words = " ".join(rng.choice(_WORDS, int(rng.integers(4, 14))))
        draw.text((margin, y), words, fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 2.2))
    return image


# --------------------------------------------------------------------------- DICOM


def _dataset(pixels: np.ndarray, **tags) -> Dataset:
    """An uncompressed single-frame DICOM around 8-bit or 12-bit (in 16) gray or 8-bit RGB pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        SecondaryCaptureImageStorage,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID = "HOSTILE"
    ds.Rows, ds.Columns = pixels.shape[:2]
    colour = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    allocated, stored = (
        (8, 8) if pixels.dtype == np.uint8 else (16, 12)
    )  # 16-bit: 12 stored, as CT/DX
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
        allocated,
        stored,
        stored - 1,
        0,
    )
    for keyword, value in tags.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def _ellipse_mask(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy / shape[0] - cy) / ry) ** 2 + ((xx / shape[1] - cx) / rx) ** 2 <= 1


def _ct_slice(rng: np.random.Generator) -> np.ndarray:
    """An axial chest CT-like slice: round body, two dark lungs, a bright spine, air around."""
    side = int(rng.choice([256, 512]))
    shape = (side, side)
    image = np.zeros(shape)
    image[_ellipse_mask(shape, 0.5, 0.5, 0.32, 0.44)] = 0.55
    for cx in (0.32, 0.68):
        image[_ellipse_mask(shape, 0.47, cx, 0.22, 0.14)] = 0.08
    image[_ellipse_mask(shape, 0.74, 0.5, 0.06, 0.05)] = 0.95
    image[_ellipse_mask(shape, 0.5, 0.5, 0.09, 0.08)] = 0.7
    image += rng.normal(0, 0.03, shape)
    return (np.clip(image, 0, 1) * 4095).astype(np.uint16)


def _ultrasound(rng: np.random.Generator) -> np.ndarray:
    """A fan of speckle on black, as an ultrasound frame."""
    shape = (480, 640)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    angle = np.arctan2(xx - shape[1] / 2, yy + 40)
    radius = np.hypot(xx - shape[1] / 2, yy + 40)
    fan = (np.abs(angle) < rng.uniform(0.5, 0.8)) & (radius < shape[0] * 0.95)
    speckle = np.asarray(
        Image.fromarray(_to8(rng.random(shape))).filter(ImageFilter.GaussianBlur(1.5))
    )
    return (speckle * fan).astype(np.uint8)


def _blobs(rng: np.random.Generator) -> np.ndarray:
    """Nuclear-medicine-like hot spots on a dark field."""
    shape = (256, 256)
    image = np.zeros(shape)
    for _ in range(int(rng.integers(3, 8))):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        image += rng.uniform(0.3, 1) * _ellipse_mask(shape, cy, cx, *rng.uniform(0.03, 0.12, 2))
    blurred = Image.fromarray(_to8(image / image.max())).filter(ImageFilter.GaussianBlur(6))
    return np.asarray(blurred)


def _hand(rng: np.random.Generator) -> np.ndarray:
    """A bright palm and five fingers on black, as a hand radiograph."""
    image = Image.new("L", (600, 800), 10)
    draw = ImageDraw.Draw(image)
    draw.ellipse([170, 400, 450, 720], fill=170)
    for i, (x, top) in enumerate(((150, 380), (220, 160), (290, 120), (360, 150), (430, 230))):
        draw.rounded_rectangle([x, top, x + 50, 520 - 60 * (i == 0)], radius=24, fill=190)
    noisy = np.asarray(image, dtype=np.float64) + rng.normal(0, 6, (800, 600))
    return (np.clip(noisy, 0, 255) * 16).astype(np.uint16)  # 12-bit


def _crafted_dicoms(rng: np.random.Generator) -> Iterator[tuple[str, Dataset]]:
    """Other modalities and body parts, and chest headers around pixels that are no chest film."""
    yield "ct_slice", _dataset(_ct_slice(rng), Modality="CT", BodyPartExamined="CHEST")
    yield "mr_noise", _dataset(_to8(np.asarray(_noise(rng).convert("L"))), Modality="MR")
    yield "ultrasound", _dataset(_ultrasound(rng), Modality="US")
    yield "nm_blobs", _dataset(_blobs(rng), Modality="NM", BodyPartExamined="WHOLEBODY")
    yield "scanned_document", _dataset(np.asarray(_document(rng)), Modality="OT")
    yield "hand", _dataset(_hand(rng), Modality="DX", BodyPartExamined="HAND")
    yield (
        "chest_header_noise",
        _dataset(_to8(rng.random(_size(rng, 400, 900))), Modality="DX", BodyPartExamined="CHEST"),
    )
    yield (
        "chest_header_photo",
        _dataset(
            np.asarray(_photo(rng)), Modality="CR", BodyPartExamined="CHEST", ViewPosition="PA"
        ),
    )
    yield "no_modality_gradient", _dataset(_to8(np.asarray(_gradient(rng).convert("L")) / 255))
    yield "chest_ct_as_cr", _dataset(_ct_slice(rng), Modality="CR", BodyPartExamined="CHEST")


# --------------------------------------------------------------------------- the set

MAKERS: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "noise": _noise,
    "blank": _blank,
    "gradient": _gradient,
    "photo": _photo,
    "document": _document,
}


def _save(image: Image.Image, path: Path, rng: np.random.Generator) -> Path:
    """PNG or JPEG (photos always JPEG, as a camera writes them)."""
    jpeg = path.name.startswith("photo") or rng.random() < 0.3
    target = path.with_suffix(".jpeg" if jpeg else ".png")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if jpeg else "PNG", **({"quality": 90} if jpeg else {}))
    target.write_bytes(buffer.getvalue())
    return target


def pydicom_test_images() -> list[Path]:
    """pydicom's bundled test files (every file: the loader decides which are images)."""
    return sorted(p for p in PYDICOM_TEST_FILES.glob("*.dcm") if p.is_file())


def build_hostile_set(dest: Path, *, per_kind: int = 12, seed: int = 0) -> list[HostileCase]:
    """Write ``per_kind`` files of each generated kind, the crafted DICOMs (cycled up to
    ``per_kind``) and list pydicom's test files, under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for kind, make in MAKERS.items():
        for i in range(per_kind):
            cases.append(HostileCase(kind, _save(make(rng), dest / f"{kind}_{i:03d}", rng)))
    crafted = []
    while len(crafted) < per_kind:
        crafted.extend(_crafted_dicoms(rng))
    for i, (name, ds) in enumerate(crafted[:per_kind]):
        path = dest / f"dicom_{i:03d}_{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        cases.append(HostileCase("dicom", path))
    cases.extend(HostileCase("pydicom", p) for p in pydicom_test_images())
    return cases
