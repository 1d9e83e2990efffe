"""Image + mask folders: ``<root>/images/<name>`` with its mask at ``<root>/masks/<name>``.

The layout of the NLM Montgomery/Shenzhen lung masks and of most segmentation releases. A mask
is either binary (0/255, or 0/1) or a label map (small integers, one per structure); the
foreground is every non-zero pixel unless ``foreground`` lists the labels that count. Masks are
never resized silently: a mask whose size differs from its image belongs to another image or
another preprocessing, so it is an error naming both files.

Everything is read into memory once (138 pairs of 256 px are 18 MB): segmentation sets are
small, and training, evaluation and the tests all need the same arrays.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_core.data.formats.files import (
    first_items,
    is_hidden,
    is_image_file,
    patient_id_from_filename,
)
from cxr_core.data.formats.mask_set import LUNG_TARGET, MaskSet
from cxr_core.data.formats.registry import DatasetFormat
from cxr_core.data.imaging import load_image
from cxr_core.errors import DatasetError

IMAGES_DIR = "images"
MASKS_DIR = "masks"


def _list_images(folder: Path) -> dict[str, Path]:
    return {
        Path(name).stem: folder / name
        for name in sorted(os.listdir(folder))
        if not is_hidden(name) and is_image_file(name) and (folder / name).is_file()
    }


def read_mask(path: str | Path, foreground: Sequence[int] | None = None) -> np.ndarray:
    """A mask file as bool ``(H, W)``: non-zero pixels, or those whose label is in ``foreground``."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            if img.mode not in ("1", "L", "P", "I", "I;16"):
                raise DatasetError(
                    f"mask {path} is a {img.mode} image; masks must be single-channel (0/255 binary or a label map)"
                )
            values = np.asarray(img.convert("I") if img.mode in ("I;16",) else img)
    except OSError as exc:
        raise DatasetError(
            f"mask {path} cannot be read as an image ({exc}); replace the file"
        ) from None
    if foreground is None:
        return values != 0
    return np.isin(values, np.asarray(list(foreground)))


def load_mask_folders(
    root: str | Path,
    *,
    size: int | None = None,
    images_dir: str = IMAGES_DIR,
    masks_dir: str = MASKS_DIR,
    foreground: Sequence[int] | None = None,
) -> MaskSet:
    """Read every image and its mask from ``root``.

    Images go through the same decoder and cache resize as classification (``size`` pixels
    square, default: the images' own size, which must then be square); masks are resized with
    nearest-neighbour to the same size. Raises :class:`DatasetError` for a missing folder, an
    image without a mask (or the reverse), a mask of another size than its image, or no pairs.
    """
    root = Path(root)
    image_folder, mask_folder = root / images_dir, root / masks_dir
    for folder, what in ((image_folder, "images"), (mask_folder, "masks")):
        if not folder.is_dir():
            raise DatasetError(
                f"{root} has no {folder.name}/ folder; an image+mask dataset needs {images_dir}/ and {masks_dir}/ "
                f"side by side, with each mask named like its image ({what} folder missing)"
            )
    images, masks = _list_images(image_folder), _list_images(mask_folder)
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise DatasetError(
            f"{len(no_mask)} image(s) in {image_folder} have no mask of the same name in {mask_folder}: "
            f"{first_items(no_mask)}; add the masks or move those images out"
        )
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise DatasetError(
            f"{len(no_image)} mask(s) in {mask_folder} have no image of the same name in {image_folder}: "
            f"{first_items(no_image)}; a mask without its image is usually a renamed or deleted file"
        )
    if not images:
        raise DatasetError(f"{image_folder} holds no images (PNG, JPEG, BMP, TIFF or DICOM)")
    ids = sorted(images)
    return build_mask_set(
        root,
        ids,
        [patient_id_from_filename(name) for name in ids],
        [images[name] for name in ids],
        lambda i: read_mask(masks[ids[i]], foreground),
        size=size,
        mask_names=[masks[name] for name in ids],
    )


def _resized(mask: np.ndarray, side: int) -> np.ndarray:
    if mask.shape == (side, side):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize(
        (side, side), Image.Resampling.NEAREST
    )
    return np.asarray(resized) > 127


def build_mask_set(
    root: Path,
    ids: Sequence[str],
    patients: Sequence[str],
    image_paths: Sequence[str | Path],
    mask_of: Callable[[int], np.ndarray],
    *,
    size: int | None,
    target: str = LUNG_TARGET,
    mask_names: Sequence[str | Path] | None = None,
) -> MaskSet:
    """Decode every image (the classification decoder and cache resize) and its mask (``mask_of(i)``,
    bool) into one :class:`MaskSet` of ``size`` px squares (default: the images' own square size).

    With ``mask_names`` (masks stored as files) a mask must have its image's size: a mismatch means
    it belongs to another image or export, and is an error naming both files. Without (masks drawn
    from run lengths or released on a fixed grid) the mask is resized like its image.
    """
    from cxr_core.data.preprocessing import to_cache_array  # torch: only when masks are read

    out_images, out_masks = [], []
    for i, path in enumerate(image_paths):
        pixels = load_image(path).pixels
        mask = mask_of(i)
        if mask_names is not None and mask.shape != pixels.shape:
            raise DatasetError(
                f"mask {mask_names[i]} is {mask.shape[1]}x{mask.shape[0]} px but its image {path} is "
                f"{pixels.shape[1]}x{pixels.shape[0]} px; the mask belongs to another image size — "
                "export masks at the size of their images"
            )
        if size is None and pixels.shape[0] != pixels.shape[1]:
            raise DatasetError(
                f"image {path} is not square ({pixels.shape[1]}x{pixels.shape[0]}); pass size="
            )
        side = size if size is not None else pixels.shape[0]
        out_images.append(to_cache_array(pixels, side))
        out_masks.append(_resized(mask, side))
    if not out_images:
        raise DatasetError(f"no image with a mask in {root}")
    shapes = {a.shape for a in out_images}
    if len(shapes) != 1:
        raise DatasetError(
            f"images in {root} have different sizes {sorted(shapes)}; pass size= to resize them"
        )
    return MaskSet(
        root=root,
        ids=tuple(ids),
        patients=tuple(patients),
        images=np.stack(out_images),
        masks=np.stack(out_masks),
        target=target,
    )


def _recognise(path: Path) -> Path | None:
    return path if (path / IMAGES_DIR).is_dir() and (path / MASKS_DIR).is_dir() else None


FORMAT = DatasetFormat(
    name="masks",
    summary="image + mask folders: images/<name> with its mask at masks/<name> (binary or label map)",
    looks_for=f"a folder holding {IMAGES_DIR}/ and {MASKS_DIR}/ with masks named like their images",
    recognise=_recognise,
    load_masks=load_mask_folders,
    mask_options=("images_dir", "masks_dir", "foreground"),
)
