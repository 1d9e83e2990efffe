"""Ensembles of trained checkpoints: train the members a recipe lists, combine them, validate.

The combined checkpoint is validated exactly like a training run ends (thresholds chosen on
validation, bootstrap CIs, ``eval/val``), on the validation split every member was selected
on, so its model card is reproduced by ``cxr evaluate`` like any other. Members must agree on
classes, data, split and input normalisation; anything else is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from cxr_core.artifacts.lung_model import lung_masker_for
from cxr_core.artifacts.run_dir import RunDir
from cxr_core.data.manifest import Manifest
from cxr_core.errors import ConfigError, DatasetError
from cxr_core.evaluation.run import finalise_checkpoint, open_cache_for
from cxr_core.models.card import ENSEMBLE, ModelCard
from cxr_core.models.checkpoint import (
    Checkpoint,
    load_checkpoint,
    read_model_card,
    save_checkpoint,
)
from cxr_core.models.ensemble import MemberSpec
from cxr_core.training.config import (
    TASK_CLASSIFICATION,
    DataConfig,
    EnsembleConfig,
    TrainConfig,
    load_config,
)
from cxr_core.training.data_setup import build_manifest, data_config_of
from cxr_core.training.engine import train
from cxr_core.utils.atomic import write_text_atomically
from cxr_core.utils.distributed import DistContext, init_distributed, shutdown_distributed

logger = logging.getLogger(__name__)

_SHARED_PREPROCESS = ("cache_size", "in_chans", "mean", "std", "lung_mask")


def _check_compatible(paths: Sequence[Path], ckpts: Sequence[Checkpoint]) -> None:
    first, first_path = ckpts[0].card, paths[0]
    for path, ckpt in zip(paths, ckpts):
        card = ckpt.card
        if card.members:
            raise ConfigError(f"{path} is itself an ensemble; list its members instead")
        if card.label_space != first.label_space:
            raise ConfigError(
                f"{path} predicts {list(card.classes)} ({card.label_space.get('task')}), but {first_path} predicts "
                f"{list(first.classes)} ({first.label_space.get('task')}); ensemble members must "
                "predict the same classes"
            )
        if card.data.get("manifest_fingerprint") != first.data.get("manifest_fingerprint"):
            raise ConfigError(
                f"{path} was trained on other data or another split than {first_path} (manifest fingerprints "
                f"{card.data.get('manifest_fingerprint')} vs {first.data.get('manifest_fingerprint')}); one member's "
                "training images could then sit in the ensemble's validation split. Train the "
                "members on the same data and split."
            )
        for key in _SHARED_PREPROCESS:
            if card.preprocess.get(key) != first.preprocess.get(key):
                raise ConfigError(
                    f"{path} preprocesses images with {key}={card.preprocess.get(key)}, {first_path} with "
                    f"{first.preprocess.get(key)}; ensemble members must share cache size, channels and normalisation"
                )


def _member_summary(path: Path, card: ModelCard) -> dict:
    training = card.training or {}
    return {
        "checkpoint": str(path),
        "architecture": card.architecture,
        "input_size": card.preprocess["input_size"],
        "epochs_run": training.get("epochs_run"),
        "best_epoch": training.get("best_epoch"),
        "wall_time_s": training.get("wall_time_s"),
        "val_macro_auroc": (card.validation or {}).get("macro_auroc"),
        "val_tta": card.tta,
        "config": training.get("config", {}),
    }


def combine_checkpoints(
    member_paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    tta: str = "none",
    n_boot: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
    data_path: str | None = None,
    provenance: str = "",
    intended_use: str = "",
    recipe: dict | None = None,
    half: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    operating_point: str | None = None,
) -> dict:
    """Write ``out_dir/model.safetensors``: the members' logits averaged, validated like a training run.

    Returns the validation report. ``data_path`` points at the members' dataset when it has moved
    since they were trained. ``half=True`` stores the weights as float16 (several members easily
    exceed what a bundled model may weigh); the validation scores them as stored.
    A finished ensemble in ``out_dir`` is never overwritten.
    """
    paths = [Path(p) for p in member_paths]
    if len(paths) < 2:
        raise ConfigError(f"an ensemble needs at least two member checkpoints, got {len(paths)}")
    out = Path(out_dir)
    _refuse_finished(out)
    ckpts = [load_checkpoint(p) for p in paths]
    _check_compatible(paths, ckpts)
    first = ckpts[0].card
    data = data_config_of(first, checkpoint=paths[0], path=data_path)
    manifest = _members_manifest(data, first)
    val = manifest.split("val")
    card = _ensemble_card(
        paths,
        ckpts,
        data,
        recipe,
        tta=tta,
        provenance=provenance or first.provenance,
        intended_use=intended_use or first.intended_use,
    )
    cache = open_cache_for(
        manifest,
        val,
        data.cache_dir,
        card.preprocess["cache_size"],
        progress=progress,
        transform=lung_masker_for(ckpts[0].preprocess, device),
    )
    state = {
        f"members.{i}.{key}": value
        for i, c in enumerate(ckpts)
        for key, value in c.state_dict.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    target = save_checkpoint(RunDir(out).model, state, card, half=half)
    report = finalise_checkpoint(
        target,
        card,
        val,
        cache,
        RunDir(out).eval_dir("val"),
        n_boot=n_boot,
        seed=seed,
        batch_size=batch_size,
        device=device,
        half=half,
        progress=progress,
        operating_point=operating_point,
    )
    if recipe:
        write_text_atomically(out / "config.yaml", yaml.safe_dump(recipe, sort_keys=False))
    return report


def _members_manifest(data: DataConfig, first: ModelCard) -> Manifest:
    """The members' dataset and split, refused when it is no longer what they were validated on."""
    manifest = build_manifest(data)
    if manifest.fingerprint() != first.data.get("manifest_fingerprint"):
        raise DatasetError(
            f"the data at {data.path} differ from what the members were trained and validated on (manifest "
            f"fingerprint {manifest.fingerprint()}, members' cards say {first.data.get('manifest_fingerprint')}); "
            "the ensemble's validation would not be comparable"
        )
    return manifest


def _ensemble_card(
    paths: Sequence[Path],
    ckpts: Sequence[Checkpoint],
    data: DataConfig,
    recipe: dict | None,
    *,
    tta: str,
    provenance: str,
    intended_use: str,
) -> ModelCard:
    """The combined model's card before validation: its members, their training, their data."""
    first = ckpts[0].card
    summaries = [_member_summary(p, c.card) for p, c in zip(paths, ckpts)]
    return ModelCard(
        architecture=ENSEMBLE,
        num_classes=first.num_classes,
        label_space=first.label_space,
        preprocess=dict(first.preprocess, input_size=max(c.preprocess.input_size for c in ckpts)),
        in_chans=first.in_chans,
        tta=tta,
        members=[
            dataclasses.asdict(
                MemberSpec(
                    c.card.architecture, c.preprocess.input_size, c.card.in_chans, c.card.dropout
                )
            )
            for c in ckpts
        ],
        training={
            "config": {"data": dataclasses.asdict(data), "ensemble": recipe or {}},
            "members": summaries,
            "wall_time_s": round(sum(float(s["wall_time_s"] or 0.0) for s in summaries), 1),
        },
        data=first.data,
        provenance=provenance,
        intended_use=intended_use,
    )


def _refuse_finished(out: Path) -> None:
    target = RunDir(out).model
    if target.is_file() and read_model_card(target).validation:
        raise ConfigError(
            f"{target} already holds a validated model; remove it or choose another output folder"
        )


def _settings(config: dict) -> dict | None:
    """A training config as compared for reuse: settings added since a run was trained count at
    their defaults, and ``out_dir`` is left out (a run moved to another folder is the same run),
    as is ``num_workers``, which by design does not change the trained weights."""
    try:
        settings = TrainConfig.from_dict(config).to_dict()
    except ConfigError:
        return None  # written by a version whose settings this one cannot read
    settings.pop("out_dir")
    settings.pop("num_workers")
    return settings


def _trained_member(config: TrainConfig, progress: bool, ctx: DistContext) -> Path:
    """The member's best checkpoint: reused when its folder holds this very run, finished; else trained."""
    out = Path(config.out_dir)
    best = RunDir(out).model
    if best.is_file():
        card = read_model_card(best)
        if card.validation:
            if _settings(card.training.get("config", {})) != _settings(config.to_dict()):
                raise ConfigError(
                    f"{out} holds a finished run of a different config than the ensemble recipe lists; "
                    "remove the folder or point the member's out_dir elsewhere"
                )
            if ctx.is_main:
                logger.info(
                    "member %s: already trained (val macro AUROC %.4f), reused",
                    out,
                    card.validation.get("macro_auroc"),
                )
            return best
    train(config, resume=RunDir(out).state.is_file(), progress=progress)
    return best


def train_ensemble(config: EnsembleConfig, *, progress: bool = True) -> dict | None:
    """Train the recipe's members (one after another: they would only compete for the same cores),
    then combine and validate them. Returns the ensemble's validation report (None on the
    ranks other than 0 under ``torchrun``).

    Under ``torchrun`` one process group serves every member (creating one per member would
    re-run the rendezvous each time), and rank 0 alone combines and validates: the others
    would only write the same files at the same time.
    """
    _refuse_finished(Path(config.out_dir))  # before hours of training, not after
    members_config = [load_config(path) for path in config.members]
    for path, member in zip(config.members, members_config):
        if member.task != TASK_CLASSIFICATION:
            raise ConfigError(
                f"{path}: an ensemble averages classifiers, but this member has task: {member.task}"
            )
    ctx = init_distributed(members_config[0].device)
    try:
        members = [_trained_member(member, progress, ctx) for member in members_config]
        report = (
            combine_checkpoints(
                members,
                config.out_dir,
                tta=config.eval.tta,
                n_boot=config.eval.n_boot,
                seed=config.seed,
                batch_size=config.eval.batch_size,
                provenance=config.provenance,
                intended_use=config.intended_use,
                recipe=config.to_dict(),
                half=config.half_weights,
                device=ctx.device,
                progress=progress,
                operating_point=config.eval.operating_point,
            )
            if ctx.is_main
            else None
        )
        ctx.barrier()
    except BaseException:
        shutdown_distributed(ctx, failed=True)
        raise
    shutdown_distributed(ctx)
    return report
