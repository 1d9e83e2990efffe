"""Patient-level train/val/test splits and the leakage check.

Images of one patient are strongly correlated; if they straddle train and validation the
validation score measures memorised patients, not generalisation. Every split here is
therefore made over patients, and :func:`check_leakage` refuses manifests that mix them.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from cxr_core.data.manifest import SPLITS, Manifest
from cxr_core.errors import DatasetError, LeakageError

_EXAMPLES = 5
# Extra manifest column set by :func:`assign_splits`: True for an image that was in the pool
# (e.g. under train/, or in NIH's train_val_list.txt) but went to val/test because its
# patient already had images there. Kept in the manifest so the move stays visible later.
FOLLOWED_COLUMN = "split_followed_patient"

logger = logging.getLogger(__name__)


def _patient_positives(frame: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Patient x class: does any image of the patient show the class (unknown counts as no)."""
    return (frame[classes].fillna(0.0) > 0).groupby(frame["patient_id"]).any()


def _strata(positives: pd.DataFrame) -> pd.Series:
    """Each patient's rarest positive class (by patient count), or -1 with none.

    Dealing the rarest-class patients first and per stratum keeps rare findings present in
    every split, which is what per-class AUCs on a small validation set need.
    """
    flags = positives.to_numpy()
    freq = flags.sum(axis=0).astype(float)
    keyed = np.where(flags, freq[None, :], np.inf)
    rarest = keyed.argmin(axis=1)
    return pd.Series(np.where(flags.any(axis=1), rarest, -1), index=positives.index)


def assign_splits(
    manifest: Manifest,
    *,
    val: float = 0.15,
    test: float = 0.0,
    seed: int = 0,
    keep_existing: bool = True,
) -> Manifest:
    """Give every unassigned image a split, over patients, seeded and roughly stratified.

    ``val``/``test`` are fractions of all images; images already in a split count towards them.
    ``keep_existing=False`` re-deals train/val too, but a test set is never moved. A patient
    who already has images in a split gets the rest of their images there as well; when that
    takes pool images into val/test (a patient under train/ and test/), the counts are logged
    as a warning and the images are marked in the ``split_followed_patient`` column, which
    :func:`leakage_report` counts.
    """
    if not (0.0 <= val < 1.0 and 0.0 <= test < 1.0 and val + test < 1.0):
        raise DatasetError(
            f"split fractions must be >= 0 and leave room for training: val={val}, test={test}"
        )
    frame = manifest.frame.copy()
    if not keep_existing:
        frame.loc[frame["split"] != "test", "split"] = ""
    followed = _follow_patient(frame)
    if keep_existing and FOLLOWED_COLUMN in frame:  # moves of an earlier assignment stay on record
        followed |= frame[FOLLOWED_COLUMN].astype(str).str.lower().eq("true").to_numpy()
    frame[FOLLOWED_COLUMN] = followed
    _warn_followed(frame)
    pool = frame["split"] == ""
    if not pool.any():
        return manifest.with_frame(frame)

    n_total = len(frame)
    already = frame["split"].value_counts()
    wanted = {
        "val": max(0.0, val * n_total - already.get("val", 0)),
        "test": max(0.0, test * n_total - already.get("test", 0)),
    }
    n_pool = int(pool.sum())
    fractions = np.array([0.0, wanted["val"] / n_pool, wanted["test"] / n_pool])
    fractions[0] = max(0.0, 1.0 - fractions[1:].sum())
    fractions /= fractions.sum()

    sub = frame.loc[pool]
    positives = _patient_positives(sub, list(manifest.classes))
    patients = positives.index.to_numpy()
    strata = _strata(positives).to_numpy()
    sizes = sub.groupby("patient_id").size().reindex(positives.index).to_numpy()
    stratum_size = np.bincount(strata + 1)
    rank = np.where(strata >= 0, stratum_size[strata + 1], np.iinfo(np.int64).max)
    shuffled = np.random.default_rng(seed).permutation(len(patients))
    order = shuffled[
        np.argsort(rank[shuffled], kind="stable")
    ]  # rarest strata first, shuffled within

    # Each patient goes to the split furthest behind its share of images, both within the
    # patient's stratum (spreads every class over the splits) and overall (keeps the fractions).
    # The choice ignores the patient's own image count, so patients with many follow-up images
    # are not pushed systematically into the largest split.
    per_stratum = np.zeros((len(stratum_size), 3))
    overall = np.zeros(3)
    picks = np.empty(len(patients), dtype=np.int64)
    closed = np.where(
        fractions > 0, 0.0, -np.inf
    )  # a split with no share must not win a rounding tie
    for i in order:
        have = per_stratum[strata[i] + 1]
        deficit = fractions * have.sum() - have + fractions * overall.sum() - overall + closed
        pick = int(np.argmax(deficit))
        have[pick] += sizes[i]
        overall[pick] += sizes[i]
        picks[i] = pick
    chosen = pd.Series(np.asarray(SPLITS, dtype=object)[picks], index=patients)
    frame.loc[pool, "split"] = sub["patient_id"].map(chosen).to_numpy()
    return manifest.with_frame(frame)


def _follow_patient(frame: pd.DataFrame) -> np.ndarray:
    """Unassigned images of a patient already in a split join that split (test > val > train).

    Returns which images were thereby taken out of the pool into val or test.
    """
    followed = np.zeros(len(frame), dtype=bool)
    assigned = frame[frame["split"] != ""]
    if assigned.empty:
        return followed
    rank = {"test": 0, "val": 1, "train": 2}
    home = (
        assigned.assign(r=assigned["split"].map(rank))
        .sort_values("r")
        .groupby("patient_id")["split"]
        .first()
    )
    pool = (frame["split"] == "").to_numpy()
    joined = frame.loc[pool, "patient_id"].map(home).fillna("").to_numpy()
    frame.loc[pool, "split"] = joined
    followed[pool] = np.isin(joined, ("val", "test"))
    return followed


def _followed_counts(frame: pd.DataFrame) -> dict:
    """Images (per split they went to) and patients marked in :data:`FOLLOWED_COLUMN`."""
    if FOLLOWED_COLUMN not in frame:
        return {"images": 0, "patients": 0, "images_per_split": {}}
    moved = frame[frame[FOLLOWED_COLUMN].astype(str).str.lower() == "true"]
    per_split = moved["split"].value_counts()
    return {
        "images": len(moved),
        "patients": int(moved["patient_id"].nunique()),
        "images_per_split": {s: int(per_split[s]) for s in SPLITS if s in per_split},
    }


def _warn_followed(frame: pd.DataFrame) -> None:
    counts = _followed_counts(frame)
    if counts["images"]:
        where = ", ".join(f"{n} to {s}" for s, n in counts["images_per_split"].items())
        logger.warning(
            "%d image(s) of %d patient(s) given as training pool were moved to keep each patient in one split (%s): "
            "their patient already has images in that split",
            counts["images"],
            counts["patients"],
            where,
        )


def leakage_report(manifest: Manifest) -> dict:
    """Patients with images in more than one split, and pool images moved to their patient's split.

    JSON-ready for reports and the dashboard. ``moved_to_patient_split`` counts the images
    :func:`assign_splits` took from the pool into val/test (0 when it did not run).
    """
    frame = manifest.frame[manifest.frame["split"] != ""]
    per_patient = frame.groupby(["patient_id", "split"]).size().unstack(fill_value=0)
    mixed = per_patient[(per_patient > 0).sum(axis=1) > 1]
    examples = [
        {"patient_id": str(pid), "images_per_split": {s: int(n) for s, n in row.items() if n > 0}}
        for pid, row in mixed.head(_EXAMPLES).iterrows()
    ]
    return {
        "ok": mixed.empty,
        "patients_in_several_splits": len(mixed),
        "examples": examples,
        "moved_to_patient_split": _followed_counts(manifest.frame),
    }


def check_leakage(manifest: Manifest) -> None:
    """Raise :class:`LeakageError` naming the first patients found in more than one split."""
    report = leakage_report(manifest)
    if report["ok"]:
        return
    shown = "; ".join(
        f"{e['patient_id']} ({', '.join(f'{s}: {n}' for s, n in e['images_per_split'].items())})"
        for e in report["examples"]
    )
    more = report["patients_in_several_splits"] - len(report["examples"])
    raise LeakageError(
        f"{report['patients_in_several_splits']} patient(s) have images in more than one split of "
        f"{manifest.source or 'the manifest'}: {shown}{f' (and {more} more)' if more > 0 else ''}. "
        "Re-split by patient (cxr_core.data.splits.assign_splits with keep_existing=False)."
    )
