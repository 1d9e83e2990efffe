"""Scoring probabilities made by another tool exactly as our own runs are scored.

A vendor product, a colleague's notebook or a model that cannot be imported still writes a
table of probabilities. :func:`evaluate_external` checks it against a dataset, turns it into
our ``predictions.csv`` format, scores it with :func:`cxr_core.evaluation.run.score_predictions`
(same metrics, thresholds, patient-level bootstrap) and writes a run folder whose
``external.json`` model card makes the dashboard list it as a model, so Performance,
Thresholds and Review work on it (without heatmaps: there are no weights to explain).

The input format (documented in the README), one row per image:

- an image column: ``image_id``, ``path``, ``Image Index`` (NIH's), ``filename``, ``file`` or
  ``image``; values are the dataset's image ids, file names or paths;
- one column per class, holding probabilities in [0, 1]; names are harmonised like the
  dataset adapters' (``Effusion`` is ``Pleural Effusion``), a ``prob:`` prefix is allowed;
- optionally ``patient_id``, ``findings``, ``error``, ``label:<class>`` and the other columns of
  our prediction table (:mod:`cxr_core.artifacts.prediction_table`: gate outcome, warnings,
  thresholds, provenance), which are ignored (labels come from the dataset). ``cxr predict``
  output is therefore valid input; it is read back exactly as written (formula-safe cells
  restored), so a file named ``=1+1_NORMAL_4.jpeg`` matches its image.

Classes predicted but not labelled in the dataset (or the reverse) are listed in the report;
a column that names no known finding is refused, since it is more likely a typo than a class.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.artifacts.prediction_table import GATE_COLUMNS, THRESHOLD_PREFIX
from cxr_core.artifacts.run_dir import LABEL_PREFIX, PROB_PREFIX, RunDir, label_column, prob_column
from cxr_core.data.labels import ClassMapping, canonical_name, is_known_finding, match_classes
from cxr_core.data.manifest import Manifest
from cxr_core.errors import DatasetError, UnknownClassError
from cxr_core.evaluation.run import score_predictions, write_evaluation
from cxr_core.metrics import DEFAULT_THRESHOLD, EvaluationReport
from cxr_core.models.card import EXTERNAL, ModelCard
from cxr_core.models.importing import file_sha256
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.csv_safe import read_table

logger = logging.getLogger(__name__)

ID_COLUMNS: tuple[str, ...] = ("image_id", "path", "Image Index", "filename", "file", "image")
IGNORED_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "findings",
    "error",
    "warnings",
    *GATE_COLUMNS,
    "lung_fraction",
    "lung_warning",
    "borderline",
    "model",
    "checkpoint_sha256",
    "threshold_set",
)
_SHOWN = 5


@dataclass
class ExternalPredictions:
    """A checked external predictions table in our ``predictions.csv`` format, for one split."""

    frame: pd.DataFrame
    mapping: ClassMapping
    source: Path
    sha256: str
    notes: list[str] = field(default_factory=list)


def _shown(items: list[str]) -> str:
    more = len(items) - _SHOWN
    return ", ".join(items[:_SHOWN]) + (f" (and {more} more)" if more > 0 else "")


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"predictions file {path} does not exist")
    try:
        return read_table(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read predictions file {path} as CSV: {exc}") from None


def _id_column(table: pd.DataFrame, path: Path) -> str:
    for name in ID_COLUMNS:
        if name in table.columns:
            return name
    raise DatasetError(
        f"{path} has no image column; name one of its columns {', '.join(ID_COLUMNS)}"
    )


def _class_columns(table: pd.DataFrame, id_column: str, path: Path) -> dict[str, str]:
    """Column -> class name as written (``prob:`` stripped); refuses columns that name no finding."""
    columns: dict[str, str] = {}
    unknown: list[str] = []
    for column in table.columns:
        if (
            column == id_column
            or column in ID_COLUMNS
            or column in IGNORED_COLUMNS
            or column.startswith((LABEL_PREFIX, THRESHOLD_PREFIX))
        ):
            continue
        name = column.removeprefix(PROB_PREFIX).strip()
        if is_known_finding(name):
            columns[column] = name
        else:
            unknown.append(column)
    if unknown:
        raise UnknownClassError(
            f"{path}: columns {_shown(unknown)} name no finding this tool knows, so they are neither an image column "
            f"({', '.join(ID_COLUMNS)}) nor a class; rename them to the finding they score, or remove them"
        )
    canon = [canonical_name(n) for n in columns.values()]
    duplicated = sorted({c for c in canon if canon.count(c) > 1})
    if duplicated:
        raise DatasetError(
            f"{path}: several columns score the same finding after harmonising names: {duplicated}"
        )
    if not columns:
        raise DatasetError(
            f"{path} has no probability columns (one column per class, named after the finding)"
        )
    return columns


def _match_rows(values: pd.Series, manifest: Manifest, path: Path) -> np.ndarray:
    """Manifest row of each predictions row, by image id, absolute path or (unique) file name."""
    frame = manifest.frame
    by_id = {str(v): i for i, v in enumerate(frame["image_id"])}
    by_path = {os.path.abspath(str(v)): i for i, v in enumerate(frame["path"])}
    names = pd.Series([os.path.basename(str(p)) for p in frame["path"]])
    unique = names[~names.duplicated(keep=False)]
    by_name = {n: int(i) for i, n in unique.items()}
    rows, unknown = [], []
    for value in values:
        value = value.strip()
        row = by_id.get(
            value,
            by_path.get(
                os.path.abspath(value) if value else "", by_name.get(os.path.basename(value))
            ),
        )
        if row is None:
            unknown.append(value or "(empty)")
        rows.append(-1 if row is None else row)
    if unknown:
        raise DatasetError(
            f"{path}: {len(unknown)} images are not in the dataset {manifest.source or ''}: {_shown(unknown)}; "
            "check that the predictions and --data are for the same images"
        )
    rows_arr = np.asarray(rows, dtype=np.int64)
    repeated = pd.Series(rows_arr).duplicated(keep=False).to_numpy()
    if repeated.any():
        raise DatasetError(
            f"{path}: several rows score the same image: {_shown(sorted(set(values[repeated].tolist())))}"
        )
    return rows_arr


def _probabilities(table: pd.DataFrame, column: str, ids: pd.Series, path: Path) -> np.ndarray:
    values = pd.to_numeric(table[column].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise DatasetError(
            f"{path}: column '{column}' has missing or non-numeric probabilities for images {_shown(ids[bad].tolist())}"
        )
    outside = (values < 0.0) | (values > 1.0)
    if outside.any():
        raise DatasetError(
            f"{path}: column '{column}' has values outside [0, 1] for images {_shown(ids[outside].tolist())}; "
            "give probabilities (apply the sigmoid/softmax to logits first)"
        )
    return values


def read_external_predictions(
    path: str | Path, manifest: Manifest, split: str
) -> ExternalPredictions:
    """Check ``path`` against ``manifest`` and return its rows of ``split`` in our format.

    Errors name the file, the column and the first images at fault: unknown images, images
    of the split without a prediction, repeated images, unknown class columns, probabilities
    that are missing, NaN or outside [0, 1]. Rows of other splits are left out and noted.
    """
    path = Path(path)
    table = _read_table(path)
    id_column = _id_column(table, path)
    columns = _class_columns(table, id_column, path)
    ids = table[id_column].astype(str)
    rows = _match_rows(ids, manifest, path)
    mapping = match_classes(
        list(columns.values()), manifest.classes, what=f"the predictions in {path.name}"
    )
    if not manifest.label_space.multilabel and (mapping.model_only or mapping.data_only):
        raise DatasetError(
            f"{path}: a single-label dataset needs a probability for each of its classes "
            f"{list(manifest.classes)}; the file has {list(columns.values())}"
        )
    column_of = {name: column for column, name in columns.items()}
    probs = {d: _probabilities(table, column_of[m], ids, path) for m, d in mapping.shared}

    part = np.flatnonzero((manifest.frame["split"] == split).to_numpy())
    if not len(part):
        raise DatasetError(f"the dataset has no '{split}' images to score")
    in_split = np.isin(rows, part)
    covered = set(rows[in_split].tolist())
    image_ids = manifest.frame["image_id"].astype(str).to_numpy()
    absent = [image_ids[i] for i in part if i not in covered]
    if absent:
        raise DatasetError(
            f"{path} has no prediction for {len(absent)} of the {len(part)} '{split}' images: {_shown(absent)}; "
            "score every image of the split (or pick the split the file covers with --split)"
        )
    notes = []
    if (~in_split).any():
        notes.append(
            f"{int((~in_split).sum())} rows of images outside the '{split}' split were left out"
        )
        logger.info("%s: %s", path.name, notes[-1])
    if any(c.startswith(LABEL_PREFIX) for c in table.columns):
        notes.append("label: columns in the file were ignored; labels come from the dataset")

    order = np.argsort(rows[in_split], kind="stable")  # manifest order, as our own runs write it
    chosen = rows[in_split][order]
    selected = np.flatnonzero(in_split)[order]
    split_frame = manifest.frame.iloc[chosen]
    frame = split_frame[["image_id", "patient_id", "path"]].reset_index(drop=True).copy()
    for name in mapping.data_classes:
        frame[label_column(name)] = split_frame[name].to_numpy(dtype=np.float64)
    for name in mapping.data_classes:
        frame[prob_column(name)] = probs[name][selected]
    return ExternalPredictions(frame, mapping, path, file_sha256(path), notes)


def external_card(
    name: str,
    predictions: ExternalPredictions,
    manifest: Manifest,
    split: str,
    thresholds: Mapping[str, float] | None = None,
) -> ModelCard:
    """The model card of an external run: its classes (the shared ones), thresholds and provenance.

    Without ``thresholds`` a multilabel run is scored at :data:`DEFAULT_THRESHOLD`; thresholds
    are never chosen on the split being scored, which would flatter the model.
    """
    classes = list(predictions.mapping.data_classes)
    multilabel = manifest.label_space.multilabel
    given = {canonical_name(k): float(v) for k, v in (thresholds or {}).items()}
    unknown = sorted(set(given) - {canonical_name(c) for c in manifest.classes})
    if unknown:
        raise UnknownClassError(
            f"thresholds given for classes the dataset does not have: {unknown}; scored: {classes}"
        )
    chosen = {c: given.get(c, DEFAULT_THRESHOLD) for c in classes} if multilabel else {}
    return ModelCard(
        architecture=EXTERNAL,
        num_classes=len(classes),
        label_space={
            "name": f"external:{name}",
            "classes": classes,
            "task": manifest.label_space.task.value,
        },
        preprocess={},
        thresholds=chosen,
        threshold_method=("given" if given else f"default {DEFAULT_THRESHOLD}")
        if multilabel
        else "argmax",
        data={
            "source": manifest.source,
            "split": split,
            "manifest_fingerprint": manifest.fingerprint(),
        },
        provenance=f"predictions made outside cxr ({name}), read from {predictions.source.name}, "
        f"sha256 {predictions.sha256}",
    )


def evaluate_external(
    predictions_file: str | Path,
    manifest: Manifest,
    split: str,
    out_dir: str | Path,
    *,
    name: str,
    thresholds: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> EvaluationReport:
    """Score an external predictions file on ``split`` of ``manifest`` and write a run folder
    (``external.json`` + ``eval/<split>/predictions.csv, report.json``) the dashboard lists."""
    predictions = read_external_predictions(predictions_file, manifest, split)
    card = external_card(name, predictions, manifest, split, thresholds)
    report = score_predictions(predictions.frame, card, n_boot=n_boot, seed=seed)
    part = manifest.split(split)
    report.evaluation = {
        "predictions_file": str(predictions.source),
        "sha256": predictions.sha256,
        "architecture": EXTERNAL,
        "name": name,
        "split": split,
        "source": manifest.source,
        "manifest_fingerprint_of_split": part.fingerprint(),
        "thresholds": card.thresholds,
        "threshold_method": card.threshold_method,
        "notes": predictions.notes,
    }
    report.label_mapping = predictions.mapping.to_dict()
    card.validation = {"split": split, **report.headline}
    run = RunDir(Path(out_dir))
    write_evaluation(run.eval_dir(split), predictions.frame, report)
    write_text_atomically(run.external, card.to_json())
    return report
