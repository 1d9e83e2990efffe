"""Builds small but real checkpoint directories for the catalog and dashboard tests.

Each directory is what `cxr train` + `cxr evaluate` leave behind: a safetensors checkpoint
with a model card (tiny ``small_cnn``), synthetic images, ``eval/val/predictions.csv`` whose
scores follow the labels, the ``report.json`` from ``evaluation_report`` and a training log.
Image paths in predictions.csv are relative to the folder that holds ``images/``, so a test
can check that the dashboard finds them only once the data root is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxr_core.data.preprocessing import PreprocessConfig
from cxr_core.evaluation.run import headline, write_evaluation
from cxr_core.metrics import evaluation_report
from cxr_core.models import create_model
from cxr_core.models.card import ModelCard
from cxr_core.models.card_signature import card_signature
from cxr_core.models.checkpoint import (
    CARD_KEY,
    DIGEST_KEY,
    SIGNATURE_KEY,
    _weights_digest,
    save_checkpoint,
)

MULTILABEL_CLASSES = ("Atelectasis", "Cardiomegaly", "Pleural Effusion")
MULTICLASS_CLASSES = ("Normal", "Pneumonia")
IMAGE_SIZE = 64


def write_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """Gray 64x64 PNGs with a bright blob (so Grad-CAM has something to look at); names returned."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    names = []
    for i in range(count):
        cy, cx = rng.integers(16, 48, size=2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 60.0)
        pixels = np.clip(0.3 + 0.6 * blob + rng.normal(0, 0.05, blob.shape), 0, 1)
        name = f"img_{i:03d}.png"
        Image.fromarray((pixels * 255).astype(np.uint8), mode="L").save(folder / name)
        names.append(name)
    return names


def build_checkpoint_dir(
    root: Path,
    name: str,
    *,
    classes: tuple[str, ...] = MULTILABEL_CLASSES,
    task: str = "multilabel",
    n_cases: int = 60,
    seed: int = 0,
    data_root: Path | None = None,
    with_eval: bool = True,
) -> Path:
    """Create ``root/name`` as a complete checkpoint directory and return it.

    ``data_root`` (default ``root.parent / "data"``) receives ``images/img_XXX.png``.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    model = create_model("small_cnn", len(classes), in_chans=1)
    preprocess = PreprocessConfig(
        cache_size=IMAGE_SIZE,
        input_size=IMAGE_SIZE,
        in_chans=1,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )

    data_root = data_root or root.parent / "data"
    image_names = write_images(data_root / "images", n_cases, seed=0)
    if task == "multilabel":
        labels = (rng.random((n_cases, len(classes))) < 0.35).astype(float)
        labels[:, 0][:12] = 1.0  # enough positives for a defined, not low-count first class
        probs = np.clip(0.25 + 0.45 * labels + rng.normal(0, 0.18, labels.shape), 0.001, 0.999)
        labels[3, 1] = np.nan  # one unknown label, as NIH/CheXpert have
    else:
        truth = rng.integers(0, len(classes), n_cases)
        labels = np.eye(len(classes))[truth]
        logits = 1.5 * labels + rng.normal(0, 1.0, labels.shape)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    patients = [f"p{i // 2:03d}" for i in range(n_cases)]
    thresholds = {c: 0.5 for c in classes} if task == "multilabel" else {}

    predictions = pd.DataFrame(
        {
            "image_id": image_names,
            "patient_id": patients,
            "path": [f"images/{n}" for n in image_names],
        }
    )
    for c, cls in enumerate(classes):
        predictions[f"label:{cls}"] = labels[:, c]
    for c, cls in enumerate(classes):
        predictions[f"prob:{cls}"] = probs[:, c]
    report = evaluation_report(
        labels,
        probs,
        list(classes),
        task,
        thresholds=[0.5] * len(classes) if thresholds else None,
        groups=np.array(patients),
        n_boot=30,
        min_positives=5,
    )
    validation = {
        "split": "val",
        **headline(report, labels, probs, np.array(patients), n_boot=30, seed=0),
    }

    card = ModelCard(
        architecture="small_cnn",
        num_classes=len(classes),
        label_space={"name": f"{name}_labels", "classes": list(classes), "task": task},
        preprocess=preprocess.to_dict(),
        in_chans=1,
        thresholds=thresholds,
        threshold_method="fixed" if thresholds else "argmax",
        training={"epochs": 3, "optimizer": "adamw"},
        data={"patients": {"val": len(set(patients))}},
        validation=validation,
        provenance=f"synthetic test fixture {name}",
    )
    save_checkpoint(directory / "model.safetensors", model.state_dict(), card)
    with (directory / "training_log.jsonl").open("w") as handle:
        for epoch in range(1, 4):
            handle.write(
                json.dumps(
                    {
                        "epoch": epoch,
                        "train_loss": 1.0 / epoch,
                        "val_loss": 1.1 / epoch,
                        "val": {"macro_auroc": 0.6 + 0.05 * epoch},
                        "lr": 1e-3,
                        "seconds": 2.0,
                    }
                )
                + "\n"
            )
    if with_eval:
        write_evaluation(directory / "eval" / "val", predictions, report)
    return directory


def build_catalog(root: Path) -> dict[str, Path]:
    """Two comparable multilabel checkpoints, one multiclass, one damaged file; images under root/data."""
    ckpts = root / "checkpoints"
    out = {
        "tiny_a": build_checkpoint_dir(ckpts, "tiny_a", seed=1),
        "tiny_b": build_checkpoint_dir(ckpts, "tiny_b", seed=2),
        "tiny_mc": build_checkpoint_dir(
            ckpts, "tiny_mc", classes=MULTICLASS_CLASSES, task="multiclass", seed=3
        ),
    }
    broken = ckpts / "broken"
    broken.mkdir(parents=True)
    (broken / "model.safetensors").write_bytes(b"\x80\x04this is a pickle, not safetensors")
    out["broken"] = broken
    return out


def write_crafted_checkpoint(
    path: Path,
    state_dict: dict[str, torch.Tensor],
    card: dict | str,
    *,
    metadata: dict[str, str] | None = None,
    digest: bool = True,
    signed: bool = True,
) -> Path:
    """A safetensors file with any card JSON (bypassing ModelCard's checks), as an attacker or a
    foreign tool could write it; the weights checksum is correct unless ``digest=False`` and the
    card checksum (an attacker can compute it too) unless ``signed=False`` or the card is not JSON."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}
    meta = {CARD_KEY: card if isinstance(card, str) else json.dumps(card), "format": "pt"}
    if digest:
        meta[DIGEST_KEY] = _weights_digest(tensors)
    if signed and digest:
        try:
            parsed = json.loads(meta[CARD_KEY])
        except (ValueError, RecursionError):
            parsed = None
        if parsed is not None:
            signature = card_signature(parsed, meta[DIGEST_KEY])
            meta[SIGNATURE_KEY] = json.dumps(signature)
    save_file(tensors, str(path), metadata={**meta, **(metadata or {})})
    return path


def noisy_copy(checkpoint: Path, dest: Path, seed: int = 9) -> Path:
    """A second model on ``checkpoint``'s very images and labels: its run folder copied, the
    probabilities perturbed and the report recomputed, as a paired comparison needs."""
    import shutil

    shutil.copytree(checkpoint, dest)
    frame = pd.read_csv(dest / "eval" / "val" / "predictions.csv")
    probs = [c for c in frame.columns if c.startswith("prob:")]
    noise = np.random.default_rng(seed).normal(0, 0.25, (len(frame), len(probs)))
    frame[probs] = np.clip(frame[probs].to_numpy() + noise, 0.001, 0.999)
    frame.to_csv(dest / "eval" / "val" / "predictions.csv", index=False)
    classes = [c[len("prob:") :] for c in probs]
    labels = frame[[f"label:{c}" for c in classes]].to_numpy()
    report = evaluation_report(labels, frame[probs].to_numpy(), classes, "multilabel", n_boot=20)
    (dest / "eval" / "val" / "report.json").write_text(report.to_json())
    return dest
