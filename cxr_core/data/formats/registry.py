"""The dataset-format registry: one :class:`DatasetFormat` per on-disk layout, looked up by name.

Like the model registry, every adapter registers itself (:func:`register_format`) and every
caller (``cxr data inspect``, training, evaluation, segmentation, ``cxr explain-eval``) goes
through :func:`load_dataset`, :func:`load_mask_set` or :func:`load_box_table`, so a new format
never touches an if-chain elsewhere. Detection asks each format in registration order whether it
recognises a path; the more specific layouts register first (an NIH expert-label file is also an
NIH file; a TB folder of ``images/`` + ``masks/`` is also an image+mask folder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxr_core.errors import ConfigError, DatasetError

if TYPE_CHECKING:
    import pandas as pd

    from cxr_core.data.formats.mask_set import MaskSet
    from cxr_core.data.manifest import Manifest

AUTO = "auto"
KINDS: tuple[str, ...] = ("labels", "masks", "boxes")


@dataclass(frozen=True)
class DatasetFormat:
    """What the rest of the library needs to know about one on-disk format.

    ``recognise(path)`` returns the file or folder to hand to the loaders when ``path`` holds
    this format (a folder may name the label file inside it), else ``None``; it must be cheap
    (headers and folder names, never a whole label file). ``looks_for`` says in words what it
    checks, for the error listing every format when nothing matches. ``load`` gives the labels as
    a :class:`Manifest`; ``load_masks`` image+mask pairs (a :class:`MaskSet`); ``load_boxes``
    a box table (``cxr_core.data.formats.boxes``). ``options``, ``mask_options`` and
    ``box_options`` name the keyword options each loader accepts (``data.adapter`` in a config,
    ``--option`` on the command line); anything else is refused by name.
    """

    name: str
    summary: str
    looks_for: str
    recognise: Callable[[Path], Path | None]
    load: Callable[..., Manifest] | None = None
    load_masks: Callable[..., MaskSet] | None = None
    load_boxes: Callable[..., pd.DataFrame] | None = None
    options: tuple[str, ...] = ()
    mask_options: tuple[str, ...] = ()
    box_options: tuple[str, ...] = ()

    def provides(self, kind: str) -> bool:
        return self.loader(kind) is not None

    def loader(self, kind: str) -> Callable[..., Any] | None:
        return {"labels": self.load, "masks": self.load_masks, "boxes": self.load_boxes}[kind]

    def option_names(self, kind: str) -> tuple[str, ...]:
        return {"labels": self.options, "masks": self.mask_options, "boxes": self.box_options}[kind]


_REGISTRY: dict[str, DatasetFormat] = {}


def register_format(fmt: DatasetFormat, *, before: str | None = None) -> DatasetFormat:
    """Add a format. Detection tries formats in registration order; ``before`` puts a layout that
    is a special case of a registered one (an NIH file with extra columns) ahead of it."""
    if fmt.name in _REGISTRY:
        raise ValueError(f"dataset format {fmt.name!r} is registered twice")
    if fmt.name == AUTO or not any(fmt.provides(kind) for kind in KINDS):
        raise ValueError(f"dataset format {fmt.name!r} needs a name other than auto and a loader")
    if before is not None and before not in _REGISTRY:
        raise ValueError(f"cannot register {fmt.name!r} before unknown format {before!r}")
    entries = list(_REGISTRY.items())
    at = [name for name, _ in entries].index(before) if before is not None else len(entries)
    entries.insert(at, (fmt.name, fmt))
    _REGISTRY.clear()
    _REGISTRY.update(entries)
    return fmt


def unregister_format(name: str) -> None:
    """Remove a format (for tests and for replacing a format with an improved one)."""
    get_format(name)
    del _REGISTRY[name]


def list_formats(kind: str | None = None) -> list[str]:
    """Registered format names in detection order; ``kind`` keeps those providing labels, masks or boxes."""
    return [name for name, fmt in _REGISTRY.items() if kind is None or fmt.provides(kind)]


def get_format(name: str) -> DatasetFormat:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset format {name!r}; use auto or one of: {', '.join(list_formats())}"
        ) from None


def _what_formats_look_for(kind: str) -> str:
    return "\n".join(f"  {name}: {_REGISTRY[name].looks_for}" for name in list_formats(kind))


def detect_format(path: str | Path, kind: str = "labels") -> tuple[str, Path]:
    """(format name, the file or folder to load) for ``path``; ``kind`` limits the candidates.

    Raises :class:`DatasetError` listing what every candidate format looks for when none
    recognises the path, so the user can see which file or folder is missing or misnamed.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    for name in list_formats(kind):
        target = _REGISTRY[name].recognise(path)
        if target is not None:
            return name, target
    what = {"labels": "labelled dataset", "masks": "image+mask dataset", "boxes": "box list"}[kind]
    raise DatasetError(
        f"{path} is not a {what} layout cxr recognises. Each format looks for:\n"
        f"{_what_formats_look_for(kind)}\n"
        "Rename or move the files to match one of these, or pass the format by name "
        "(cxr data inspect --format NAME; data.format in a config)."
    )


def resolve(path: str | Path, fmt: str, kind: str) -> tuple[DatasetFormat, Path]:
    """The format to use and the path its loader gets: detected for ``auto``; for a named format,
    the file it recognises inside ``path`` (a folder holding its label file) or ``path`` itself."""
    if fmt == AUTO:
        name, target = detect_format(path, kind)
        return _REGISTRY[name], target
    chosen = get_format(fmt)
    if not chosen.provides(kind):
        raise DatasetError(
            f"the {fmt} format has no {kind}; formats with {kind}: {', '.join(list_formats(kind))}"
        )
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    return chosen, chosen.recognise(path) or path


def check_options(fmt: DatasetFormat, options: dict[str, Any], kind: str = "labels") -> None:
    """Unknown adapter options are a configuration mistake (a misspelt key would otherwise be
    silently ignored and the run would read the data differently than its config says)."""
    known = fmt.option_names(kind)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"the {fmt.name} format has no option(s) {unknown} for its {kind}; its options are: "
            f"{', '.join(known) if known else 'none'}"
        )


def _load(kind: str, path: str | Path, fmt: str, options: dict[str, Any]) -> Any:
    chosen, target = resolve(path, fmt, kind)
    check_options(chosen, options, kind)
    return chosen.loader(kind)(target, **options)


def load_dataset(path: str | Path, fmt: str = AUTO, **options: Any) -> Manifest:
    """Labels of any registered format as a manifest; ``options`` go to the format's loader
    (e.g. ``missing="drop"``, ``policy="ignore"``) and unknown ones are refused by name."""
    return _load("labels", path, fmt, options)


def load_mask_set(
    path: str | Path, fmt: str = AUTO, *, size: int | None = None, **options: Any
) -> MaskSet:
    """Image+mask pairs of any format that has masks (image+mask folders, SIIM-ACR, COVID-19
    Radiography, NLM TB sets), resized to ``size`` pixels square."""
    chosen, target = resolve(path, fmt, "masks")
    check_options(chosen, options, "masks")
    return chosen.load_masks(target, size=size, **options)


def load_box_table(path: str | Path, fmt: str = AUTO, **options: Any) -> pd.DataFrame:
    """The boxes of any format that has them (NIH, RSNA Pneumonia, VinDr-CXR) as one table
    (columns in ``cxr_core.data.formats.boxes.BOX_TABLE_COLUMNS``)."""
    return _load("boxes", path, fmt, options)
