"""The manifest fingerprint: the same data anywhere on disk, and any change that matters."""

from __future__ import annotations

import shutil
from pathlib import Path

from cxr_core.data.formats import load_dataset


def _folders(root: Path) -> Path:
    for cls, names in {
        "NORMAL": ["IM-0001-0001.jpeg", "IM-0002-0001.jpeg"],
        "PNEUMONIA": ["person1_bacteria_1.jpeg"],
    }.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            (root / cls / name).write_bytes(b"not decoded by the adapter")
    return root


def test_copied_dataset_keeps_its_fingerprint(tmp_path):
    original = load_dataset(_folders(tmp_path / "a" / "data"), fmt="folders")
    copy = shutil.copytree(tmp_path / "a" / "data", tmp_path / "b" / "deeper" / "data")
    moved = load_dataset(copy, fmt="folders")
    assert set(moved.frame["path"]).isdisjoint(original.frame["path"])
    assert moved.fingerprint() == original.fingerprint()


def test_fingerprint_changes_with_files_labels_and_splits(tmp_path):
    root = _folders(tmp_path / "data")
    original = load_dataset(root, fmt="folders")
    frame = original.frame
    renamed = frame.assign(path=frame["path"].str.replace("IM-0002-0001", "IM-0002-0002"))
    relabelled = frame.copy()
    relabelled.loc[0, list(original.classes)] = [0.0, 1.0]
    split = frame.assign(split=["train", "val", "train"])
    prints = {original.with_frame(f).fingerprint() for f in (frame, renamed, relabelled, split)}
    assert len(prints) == 4
