"""Finding checkpoint directories and reading what they hold, for the dashboard's model picker.

The dashboard lists every checkpoint under the bundled ``checkpoints/`` folder plus any folder
a user points to (``CXR_CHECKPOINT_DIRS``, or typed in the sidebar). Listing must never fail
because one checkpoint is damaged, so a broken one becomes an entry carrying its error
message; only its model card is read (no weights), which keeps listing fast.

Layout of a checkpoint directory (see ``docs/architecture.md``)::

    <name>/model.safetensors  training_log.jsonl  eval/<split>/{predictions.csv, report.json}  thresholds/
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_core.artifacts.run_dir import EXTERNAL_FILE, MODEL_FILE, RunDir, load_predictions
from cxr_core.artifacts.thresholds_store import ThresholdStore
from cxr_core.errors import CheckpointError, CXRError, UnknownClassError
from cxr_core.metrics import EvaluationReport
from cxr_core.models.card import EXTERNAL, ModelCard
from cxr_core.models.checkpoint import DIGEST_KEY, read_model_card
from cxr_core.utils.tasks import Task

BUNDLED_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


@dataclass(frozen=True)
class CheckpointEntry:
    """One checkpoint directory as found on disk; ``card`` is None when ``error`` says why."""

    name: str
    dir: Path
    model_path: Path
    card: ModelCard | None = None
    error: str = ""
    eval_splits: tuple[str, ...] = ()
    has_training_log: bool = False

    @property
    def ok(self) -> bool:
        return self.card is not None

    @property
    def external(self) -> bool:
        """Predictions made by another tool: scored like ours, but no weights to predict or explain with."""
        return self.card is not None and self.card.architecture == EXTERNAL

    @property
    def has_eval(self) -> bool:
        return bool(self.eval_splits)

    @property
    def key(self) -> str:
        """Stable identity across reruns (two folders may share a name)."""
        return str(self.dir)

    def summary(self) -> dict:
        """Short description for pickers and tables."""
        if self.card is None:
            return {"name": self.name, "error": self.error}
        card = self.card
        return {
            "name": self.name,
            "architecture": card.architecture,
            "task": card.label_space.get("task", ""),
            "label_space": card.label_space.get("name", ""),
            "num_classes": card.num_classes,
            "classes": list(card.classes),
            "val_macro_auroc": macro_auroc(card.validation),
            "created": card.created,
            "eval_splits": list(self.eval_splits),
        }

    def threshold_store(self) -> ThresholdStore:
        if self.card is None:
            raise CheckpointError(f"{self.model_path}: {self.error}")
        return ThresholdStore(self.dir, self.card.classes, self.card.thresholds)


def macro_auroc(summary: dict | None) -> float | None:
    """Macro AUROC from a model card's ``validation`` block (``macro_auroc``, written by
    :func:`cxr_core.evaluation.run.headline`) or an evaluation report (``macro.auroc``)."""
    if not summary:
        return None
    value = summary.get("macro_auroc")
    if value is None and isinstance(summary.get("macro"), dict):
        value = summary["macro"].get("auroc")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def checkpoint_digest(model_path: str | os.PathLike) -> str:
    """SHA-256 identifying a checkpoint's weights, for result files that must name their model.

    The weights digest recorded in the file at save time when present (cheap: header only),
    else the SHA-256 of the file's bytes.
    """
    from safetensors import safe_open

    path = Path(model_path)
    try:
        with safe_open(str(path), "pt") as handle:
            recorded = (handle.metadata() or {}).get(DIGEST_KEY)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: cannot read the checkpoint header ({exc})") from exc
    if recorded:
        return recorded
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_dirs_from_env() -> list[Path]:
    """Folders listed in ``CXR_CHECKPOINT_DIRS`` (separated by the OS path separator)."""
    raw = os.environ.get("CXR_CHECKPOINT_DIRS", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


def default_checkpoint_dirs() -> list[Path]:
    """Where the dashboard looks by default: ``CXR_CHECKPOINT_DIRS`` if set, else the bundled folder."""
    return checkpoint_dirs_from_env() or [BUNDLED_DIR]


def _is_run(directory: Path) -> bool:
    return (directory / MODEL_FILE).is_file() or (directory / EXTERNAL_FILE).is_file()


def _candidate_dirs(root: Path) -> list[Path]:
    if _is_run(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _is_run(p))


def read_entry(directory: str | os.PathLike, name: str | None = None) -> CheckpointEntry:
    """Describe one checkpoint directory; a damaged one gets ``error`` instead of a card."""
    directory = Path(directory)
    run = RunDir(directory)
    model_path = run.model
    common = dict(
        name=name or directory.name,
        dir=directory,
        model_path=model_path,
        eval_splits=run.eval_splits(),
        has_training_log=run.training_log.is_file(),
    )
    if not model_path.is_file() and run.external.is_file():
        return _external_entry(run, common, name)
    try:
        card = read_model_card(model_path)
    except CXRError as exc:
        return CheckpointEntry(**common, error=str(exc))
    except OSError as exc:
        return CheckpointEntry(
            **common, error=f"{model_path} cannot be read ({exc.strerror or exc})"
        )
    return CheckpointEntry(**common, card=card)


def _external_entry(run: RunDir, common: dict, name: str | None) -> CheckpointEntry:
    """An external-predictions run (``cxr evaluate --predictions``), named ``external: <folder>``."""
    common = {**common, "name": name or f"external: {run.path.name}"}
    try:
        card = ModelCard.from_json(run.external.read_text(encoding="utf-8"))
    except CXRError as exc:
        return CheckpointEntry(**common, error=f"{run.external}: {exc}")
    except OSError as exc:
        return CheckpointEntry(
            **common, error=f"{run.external} cannot be read ({exc.strerror or exc})"
        )
    return CheckpointEntry(**common, card=card)


def is_segmentation(entry: CheckpointEntry) -> bool:
    """A mask model (the bundled lung model): listed apart, because it classifies nothing."""
    return entry.card is not None and entry.card.label_space.get("task") == Task.SEGMENTATION.value


def discover_checkpoints(
    dirs: Iterable[str | os.PathLike] | None = None, *, segmentation: bool = False
) -> list[CheckpointEntry]:
    """Every classifier checkpoint in ``dirs`` (each a checkpoint directory or a folder of them),
    sorted by name; ``segmentation=True`` lists the segmentation (lung mask) models instead.

    Folders that do not exist are skipped (use :func:`check_folder` to tell a user why);
    the same directory reached twice is listed once; clashing names get their parent appended.
    """
    seen: dict[Path, None] = {}
    for root in dirs if dirs is not None else default_checkpoint_dirs():
        for directory in _candidate_dirs(Path(root).expanduser()):
            seen.setdefault(directory.resolve(), None)
    entries = [e for e in (read_entry(d) for d in seen) if is_segmentation(e) == segmentation]
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    entries = [
        replace(e, name=f"{e.name} ({e.dir.parent.name})") if counts[e.name] > 1 else e
        for e in entries
    ]
    return sorted(entries, key=lambda e: e.name.lower())


def check_folder(path: str | os.PathLike) -> Path:
    """A user-given folder that holds at least one checkpoint, or a CheckpointError saying what is wrong."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise CheckpointError(
            f"folder {folder} does not exist; give the full path of a checkpoint folder"
        )
    if not _candidate_dirs(folder):
        raise CheckpointError(
            f"{folder} holds no checkpoint: expected {folder / MODEL_FILE} or sub-folders each with a {MODEL_FILE} "
            "(train one with `cxr train --config configs/<file>.yaml`)"
        )
    return folder


@dataclass
class EvalRun:
    """One evaluation of a checkpoint on a split: per-image predictions and the metrics report."""

    split: str
    dir: Path
    classes: tuple[str, ...]
    predictions: pd.DataFrame | None = None
    report: EvaluationReport | None = None
    warnings: list[str] = field(default_factory=list)

    def labels(self) -> np.ndarray:
        """(N, C) ground truth, NaN where unknown."""
        return self._columns("label")

    def scores(self) -> np.ndarray:
        """(N, C) predicted probabilities."""
        return self._columns("prob")

    def _columns(self, prefix: str) -> np.ndarray:
        if self.predictions is None:
            raise CheckpointError(
                f"no predictions.csv in {self.dir}; run `cxr evaluate` to create it"
            )
        cols = [f"{prefix}:{c}" for c in self.classes]
        return self.predictions[cols].to_numpy(dtype=np.float64)


def load_eval_run(entry: CheckpointEntry, split: str = "val") -> EvalRun:
    """Predictions and report of ``entry`` on ``split``; either may be missing (noted in ``warnings``)."""
    run_dir = RunDir(entry.dir).eval_dir(split)
    if split not in entry.eval_splits:
        raise CheckpointError(
            f"checkpoint {entry.name} has no evaluation on the '{split}' split (looked in {run_dir}); "
            f"run `cxr evaluate` for it"
            + (f" or pick one of: {', '.join(entry.eval_splits)}" if entry.eval_splits else "")
        )
    run = EvalRun(split=split, dir=run_dir, classes=entry.card.classes if entry.card else ())
    pred_path, report_path = RunDir(entry.dir).predictions(split), RunDir(entry.dir).report(split)
    if pred_path.is_file():
        frame, classes = load_predictions(pred_path)
        run.predictions, run.classes = frame, tuple(classes)
    else:
        run.warnings.append(f"{pred_path} is missing: per-image views are unavailable")
    if report_path.is_file():
        try:
            run.report = read_report(report_path)
        except CXRError as exc:
            run.warnings.append(str(exc))
    else:
        run.warnings.append(
            f"{report_path} is missing: metrics are computed from predictions.csv instead"
        )
    return run


def read_report(path: Path) -> EvaluationReport:
    """A ``report.json`` as a typed report; an unreadable or foreign file is a CheckpointError saying so."""
    try:
        return EvaluationReport.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(
            f"{path} cannot be read ({exc.strerror or exc}); re-run `cxr evaluate`"
        ) from None
    except CXRError as exc:
        raise CheckpointError(
            f"{path} is not a readable evaluation report ({exc}); re-run `cxr evaluate`"
        ) from None


def load_training_log(entry: CheckpointEntry) -> pd.DataFrame:
    """One row per epoch from ``training_log.jsonl``; a torn last line (run still writing) is skipped."""
    path = RunDir(entry.dir).training_log
    if not path.is_file():
        return pd.DataFrame()
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            rows.append(_flatten(record))
    return pd.DataFrame(rows)


def _flatten(record: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif not isinstance(value, (list, tuple)):
            flat[name] = value
    return flat


def resolve_image_path(
    path: str, image_id: str, data_roots: Sequence[str | os.PathLike]
) -> Path | None:
    """Where an evaluated image can be read now, or None.

    ``predictions.csv`` stores the path seen at evaluation time, which may be relative or on
    another machine; the image is looked for as given, then under each data root by its
    relative path, its trailing path parts, and its image id.
    """
    candidates: list[Path] = []
    if path:
        given = Path(path)
        candidates.append(given)
        for root in data_roots:
            root = Path(root).expanduser()
            parts = given.parts[1:] if given.is_absolute() else given.parts
            candidates += [root.joinpath(*parts[i:]) for i in range(len(parts))]
    for root in data_roots:
        if image_id:
            candidates.append(Path(root).expanduser() / image_id)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def class_counts(card: ModelCard) -> pd.DataFrame:
    """Per class: images the model learnt from and was validated on, with the validation AUROC.

    A model card's headline hides how thin the evidence is for rare findings; this table puts
    the counts next to the numbers. ``low_count`` follows the evaluation report's rule (the
    classes left out of the macro average). Columns: class, train_positives, val_positives,
    val_negatives, val_auroc, low_count.
    """
    splits = (card.data or {}).get("splits", {})
    validation = card.validation or {}
    per_class = validation.get("per_class", {})
    excluded = set(validation.get("macro_classes_excluded", []))
    rows = []
    for cls in card.classes:
        entry = per_class.get(cls, {})
        rows.append(
            {
                "class": cls,
                "train_positives": splits.get("train", {}).get("positives", {}).get(cls),
                "val_positives": entry.get(
                    "n_pos", splits.get("val", {}).get("positives", {}).get(cls)
                ),
                "val_negatives": entry.get("n_neg"),
                "val_auroc": entry.get("auroc"),
                "low_count": cls in excluded,
            }
        )
    return pd.DataFrame(rows)


def ensemble_members(card: ModelCard) -> pd.DataFrame:
    """One row per member of an ensemble (empty for a single model): what it is, how long it
    trained and how it did alone on the same validation split, so the ensemble's gain shows.
    Columns: architecture, input_size, epochs, best_epoch, training_minutes, val_macro_auroc, tta, checkpoint."""
    rows = (
        [
            {
                "architecture": m.get("architecture"),
                "input_size": m.get("input_size"),
                "epochs": m.get("epochs_run"),
                "best_epoch": m.get("best_epoch"),
                "training_minutes": round(m["wall_time_s"] / 60, 1)
                if m.get("wall_time_s") is not None
                else None,
                "val_macro_auroc": m.get("val_macro_auroc"),
                "tta": m.get("val_tta"),
                "checkpoint": Path(m["checkpoint"]).parent.name if m.get("checkpoint") else None,
            }
            for m in (card.training or {}).get("members", [])
        ]
        if card.members
        else []
    )
    return pd.DataFrame(rows)


def evaluation_data(entry: CheckpointEntry) -> tuple[str, str]:
    """(data source, identity) of the data a checkpoint was validated on, from its model card; the
    identity joins the manifest fingerprint and the split rule ("" when unknown). Two checkpoints'
    validation metrics are comparable only when the identities match."""
    data = (entry.card.data if entry.card else None) or {}
    fingerprint = data.get("manifest_fingerprint")
    identity = (
        f"{fingerprint}|{json.dumps(data.get('split_rule'), sort_keys=True)}" if fingerprint else ""
    )
    return str(data.get("source") or data.get("path") or "unknown data"), identity


def same_evaluation_data(first: CheckpointEntry, second: CheckpointEntry) -> bool:
    """Whether two checkpoints were validated on the same dataset manifest (known on both sides)."""
    (_, a), (_, b) = evaluation_data(first), evaluation_data(second)
    return bool(a) and a == b


def per_class_auroc(
    entry: CheckpointEntry, split: str = "val"
) -> dict[str, tuple[float, float, float]]:
    """Class -> (AUROC, CI low, CI high) from the split's report.json, else the card's validation block.

    Classes without a defined AUROC are left out; a missing interval is NaN.
    """
    path = RunDir(entry.dir).report(split)
    try:
        report = read_report(path) if path.is_file() else None
    except CXRError:
        report = None
    if report is not None:
        stats = {n: (e.auroc, e.auroc_ci) for n, e in report.per_class.items()}
    else:
        validation = (entry.card.validation if entry.card is not None else None) or {}
        stats = {
            n: (e.get("auroc"), e.get("auroc_ci"))
            for n, e in (validation.get("per_class") or {}).items()
            if isinstance(e, dict)
        }
    out: dict[str, tuple[float, float, float]] = {}
    for name, (auroc, ci) in stats.items():
        if auroc is None:
            continue
        ci = ci or [None, None]
        out[name] = (float(auroc), *(float("nan") if v is None else float(v) for v in ci[:2]))
    if not out:
        raise CheckpointError(
            f"checkpoint {entry.name} has no per-class AUROC: neither {path} nor its model card's validation "
            "block holds one; run `cxr evaluate` on it"
        )
    return out


OUTCOMES: tuple[str, ...] = ("TP", "FP", "FN", "TN")


def review_cases(
    run: EvalRun, class_name: str, threshold: float, *, multilabel: bool = True
) -> pd.DataFrame:
    """Every case of ``run`` with a known label for ``class_name``, and its outcome at ``threshold``.

    Multilabel: predicted positive when ``prob >= threshold``. Multiclass: predicted positive when
    the class is the most probable one (the threshold is not used). Columns: row (position in
    ``run.predictions``), image_id, patient_id, path, label, prob, predicted, outcome
    (TP/FP/FN/TN), margin (prob - threshold).
    """
    if class_name not in run.classes:
        raise UnknownClassError(
            f"'{class_name}' is not a class of this evaluation run; its classes are: {', '.join(run.classes)}"
        )
    if run.predictions is None:
        raise CheckpointError(f"no predictions.csv in {run.dir}; run `cxr evaluate` to create it")
    c = run.classes.index(class_name)
    labels, scores = run.labels()[:, c], run.scores()
    prob = scores[:, c]
    predicted = prob >= threshold if multilabel else np.argmax(scores, axis=1) == c
    frame = run.predictions
    cases = pd.DataFrame(
        {
            "row": np.arange(len(frame)),
            "image_id": frame["image_id"].astype(str).to_numpy(),
            "patient_id": frame["patient_id"].astype(str).to_numpy()
            if "patient_id" in frame
            else "",
            "path": frame["path"].fillna("").astype(str).to_numpy() if "path" in frame else "",
            "label": labels,
            "prob": prob,
            "predicted": predicted,
        }
    )
    cases = cases[~np.isnan(labels)].copy()
    truth = cases["label"] == 1
    cases["outcome"] = np.select(
        [truth & cases["predicted"], ~truth & cases["predicted"], truth & ~cases["predicted"]],
        ["TP", "FP", "FN"],
        "TN",
    )
    cases["margin"] = cases["prob"] - threshold
    return cases.reset_index(drop=True)
