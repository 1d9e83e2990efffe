"""The CUDA, AMP and multi-GPU decisions, checked on the CPU with stand-ins for the GPU.

A mocked compute capability stands in for a V100 or an A100, a ``meta`` tensor for a tensor
that ``torch.load(map_location=cuda)`` would have put on the GPU, and a GradScaler on the
CPU for the fp16 one.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from torch import nn

from cxr_core.errors import ConfigError, TrainingDivergedError
from cxr_core.training import state as state_module
from cxr_core.training import train
from cxr_core.training.amp import load_scaler_state, resolve_amp
from cxr_core.training.classification import build_cache_in_turn
from cxr_core.training.ema import EMA
from cxr_core.training.engine import Engine
from cxr_core.training.runtime import Runtime, loader_workers, process_batch_size
from cxr_core.training.sampling import SeededItems
from cxr_core.training.state import capture_rng, restore_rng
from cxr_core.training.steps import LossTally
from cxr_core.utils import distributed
from cxr_core.utils.device import gpu_index, resolve_device
from cxr_core.utils.distributed import DistContext, init_distributed, shutdown_distributed

CUDA0 = torch.device("cuda", 0)
CPU_CTX = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.mark.parametrize(
    "capability, amp, expected",
    [
        ((8, 0), "auto", torch.bfloat16),  # A100: native bf16
        ((9, 0), "auto", torch.bfloat16),  # H100
        ((7, 0), "auto", torch.float16),  # V100: bf16 only emulated
        ((7, 5), "auto", torch.float16),  # T4
        ((7, 5), "fp16", torch.float16),
        ((8, 6), "fp16", torch.float16),
        ((7, 5), "bf16", torch.bfloat16),  # asked for explicitly: honoured, with a warning
        ((8, 0), "off", None),
        ((7, 0), "off", None),
    ],
)
def test_amp_resolution_on_gpus(monkeypatch, caplog, capability, amp, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    with caplog.at_level(logging.WARNING):
        assert resolve_amp(amp, CUDA0) == expected
    assert ("emulated" in caplog.text) == (amp == "bf16" and capability < (8, 0))


def test_amp_resolution_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16"):
        resolve_amp("fp16", cpu)


def test_per_process_batch_from_the_global_batch():
    assert process_batch_size(32, 1, None, 4) == 32  # per process: the global batch is 128
    assert process_batch_size(32, 1, 128, 4) == 32
    assert process_batch_size(32, 2, 128, 4) == 16
    assert process_batch_size(32, 1, 64, 1) == 64
    with pytest.raises(ConfigError, match="global_batch_size 100"):
        process_batch_size(32, 1, 100, 3)


def test_worker_count_from_the_machine(monkeypatch):
    assert loader_workers(3, 4) == 3
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers("auto", 1) == 8  # capped
    assert loader_workers("auto", 4) == 3  # 4 cores each, one left for the loop
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert loader_workers("auto", 1) == 1 and loader_workers("auto", 2) == 0


def test_gpu_binding_for_torchrun_and_slurm():
    assert gpu_index(0, 4) == 0 and gpu_index(3, 4) == 3  # torchrun: every GPU of the node visible
    assert gpu_index(2, 1) == 0  # SLURM --gpus-per-task=1: the task's one GPU is cuda:0
    with pytest.raises(ConfigError, match="LOCAL_RANK 2 sees 2 GPUs"):
        gpu_index(2, 2)


@pytest.fixture
def two_fake_gpus(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    return current


def test_cuda_n_becomes_the_current_device(two_fake_gpus):
    ctx = init_distributed("cuda:1")
    assert ctx.device == torch.device("cuda", 1) and two_fake_gpus == [torch.device("cuda", 1)]
    with pytest.raises(ConfigError, match="cuda:2 does not exist"):
        resolve_device("cuda:2")


def test_torchrun_refuses_cuda_n_and_binds_local_rank(two_fake_gpus, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="LOCAL_RANK"):
        init_distributed("cuda:0")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)  # joined, not created
    ctx = init_distributed("cuda")
    assert ctx.device == torch.device("cuda", 1) and two_fake_gpus == [torch.device("cuda", 1)]
    assert not ctx.owns_group


def test_no_collective_while_unwinding(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda *a, **k: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    ctx = DistContext(
        rank=1, world_size=2, local_rank=1, device=torch.device("cpu"), owns_group=True
    )
    shutdown_distributed(ctx, failed=True)
    assert calls == []
    shutdown_distributed(ctx)
    assert calls == ["barrier", "destroy"]
    calls.clear()
    shutdown_distributed(
        DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    )
    assert calls == []  # a joined group (an ensemble's) is left to its owner


def test_cache_is_built_once_per_node_in_turn(monkeypatch):
    from cxr_core.training import classification

    events = []
    masker = object()  # the run's lung masker (or None): every process builds with it

    def build(cls, *a, **k):
        assert k["transform"] is masker
        events.append("build")
        return "cache"

    monkeypatch.setattr(classification.ImageCache, "build", classmethod(build))

    class Ctx:
        def __init__(self, rank, local_rank):
            self.rank, self.local_rank, self.is_main = rank, local_rank, rank == 0

        def barrier(self):
            events.append("barrier")

    data = type("D", (), {"cache_dir": "c", "cache_size": 64})()
    expected = {
        (0, 0): ["build", "barrier", "barrier"],  # rank 0 first
        # then the first process of node 2 (node-local caches)
        (4, 0): ["barrier", "build", "barrier"],
        (5, 1): ["barrier", "barrier", "build"],  # then everyone else finds a finished cache
    }
    for (rank, local_rank), order in expected.items():
        events.clear()
        runtime = Runtime(Ctx(rank, local_rank), None, False, False, 0)
        assert build_cache_in_turn(runtime, None, data, masker) == "cache" and events == order


def test_scaler_state_across_amp_settings(caplog):
    fp16 = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    saved = fp16.state_dict()
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler_state(fresh, saved, saved_amp="float16", amp="float16")
    assert fresh.get_scale() == 1024.0
    with caplog.at_level(logging.WARNING):
        load_scaler_state(
            torch.amp.GradScaler("cpu", enabled=True), {}, saved_amp="bfloat16", amp="float16"
        )
        load_scaler_state(
            torch.amp.GradScaler("cpu", enabled=False), saved, saved_amp="float16", amp="bfloat16"
        )
    assert "starts afresh" in caplog.text and "no longer used" in caplog.text


def test_loss_tally_leaves_out_non_finite_batches():
    tally = LossTally(torch.device("cpu"))
    for loss, n in ((1.0, 4), (float("inf"), 4), (3.0, 2), (float("nan"), 1)):
        tally.add(torch.tensor(loss), n)
    mean, images, nonfinite = tally.result(CPU_CTX)
    assert mean == pytest.approx((4 * 1.0 + 2 * 3.0) / 6) and images == 6 and nonfinite == 2


def _one_nan_batch(engine):
    criterion, calls = engine.parts.criterion, []

    def nan_on_second_batch(logits, targets):
        calls.append(1)
        loss = criterion(logits, targets)
        return loss * float("nan") if len(calls) == 2 else loss

    engine.parts.criterion = nan_on_second_batch


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_an_overflowing_fp16_batch_is_skipped_not_fatal(
    task,
    class_folders,
    mask_folders,
    cache_dir,
    tmp_path,
    make_config,
    make_segmentation_config,
):
    if task == "classification":  # 30 training images: 4 batches of 8
        config, batches = make_config(class_folders, tmp_path / "run", cache_dir, epochs=1), 4
    else:  # 9 training pairs: 3 batches of 4
        config, batches = make_segmentation_config(mask_folders, tmp_path / "run", epochs=1), 3
    engine = Engine(config, CPU_CTX, progress=False)
    engine.setup()
    assert len(engine.loader) == batches
    # the fp16 path: skips the step, lowers the scale
    engine.parts.scaler = torch.amp.GradScaler("cpu", enabled=True)
    before = engine.parts.scaler.get_scale()
    _one_nan_batch(engine)
    loss, _ = engine.train_epoch(0)
    assert np.isfinite(loss) and engine.loop.nonfinite_batches == 1
    assert engine.parts.scaler.get_scale() < before
    assert all(torch.isfinite(p).all() for p in engine.parts.model.parameters())

    engine = Engine(config, CPU_CTX, progress=False)
    engine.setup()  # float32: the NaN update is applied, so the run stops
    _one_nan_batch(engine)
    # the NaN weights poison the rest: the second batch and every one after it
    with pytest.raises(TrainingDivergedError, match=f"non-finite in {batches - 1} batch"):
        engine.train_epoch(0)


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_rng_snapshot_round_trip():
    snapshot = capture_rng(torch.device("cpu"))
    first = _draws()
    restore_rng(snapshot, torch.device("cpu"))
    assert _draws() == first
    assert snapshot["cuda"] is None


def test_resume_loads_everything_to_the_cpu(
    class_folders, cache_dir, tmp_path, make_config, monkeypatch
):
    """A GPU-located state (here: ``meta``, what map_location=cuda would give) could not be restored."""
    config = make_config(class_folders, tmp_path / "run", cache_dir, model__dropout=0.2)
    train(config, progress=False, stop_after_epochs=1)
    real_load = torch.load
    seen = []

    def load(path, map_location=None, **kwargs):
        seen.append(map_location)
        loaded = real_load(path, map_location="cpu", **kwargs)
        if str(map_location) != "cpu":  # what a device other than the CPU would have produced
            loaded = {
                k: (v.to("meta") if isinstance(v, torch.Tensor) else v) for k, v in loaded.items()
            }
            loaded["rng"] = {
                k: (v.to("meta") if isinstance(v, torch.Tensor) else v)
                for k, v in loaded["rng"].items()
            }
        return loaded

    monkeypatch.setattr(state_module.torch, "load", load)
    engine = Engine(config, CPU_CTX, progress=False)
    engine.setup()
    engine.resume()
    assert seen == ["cpu"]
    steps = [s["step"] for s in engine.parts.optimizer.state.values()]
    assert steps and all(s.device.type == "cpu" for s in steps)  # Adam's counters stay on the host
    with pytest.raises((RuntimeError, TypeError)):
        restore_rng({**capture_rng(), "torch": torch.get_rng_state().to("meta")})


def test_batch_seeding_leaves_the_cuda_generators_alone(class_folders, monkeypatch):
    reseeded = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeded.append)
    monkeypatch.setattr(torch.cuda, "manual_seed", reseeded.append)
    items = SeededItems([torch.zeros(1)] * 4, seed=0)
    items.__getitems__([(0, 1), (0, 2)])
    assert reseeded == []


def test_ema_update_matches_the_per_tensor_formula():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 1, 8, 8))
    ema = EMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in ema.model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()(torch.randn(2, 1, 8, 8))  # moves the BN statistics and num_batches_tracked
    for key, current in model.state_dict().items():
        expected[key] = (
            expected[key].lerp(current, 0.1) if current.is_floating_point() else current.clone()
        )
    ema.update()
    for key, value in ema.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_each_rank_captures_and_restores_its_own_cuda_generator(monkeypatch):
    states = {
        0: torch.full((16,), 0, dtype=torch.uint8),
        1: torch.full((16,), 1, dtype=torch.uint8),
    }
    restored = {}
    monkeypatch.setattr(
        torch.cuda, "get_rng_state", lambda device: states[torch.device(device).index]
    )
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, device: restored.update({device.index: state})
    )
    snapshot = capture_rng(torch.device("cuda", 1))
    assert torch.equal(snapshot["cuda"], states[1])
    restore_rng({**snapshot, "torch": torch.get_rng_state()}, torch.device("cuda", 1))
    assert list(restored) == [1] and restored[1].device.type == "cpu"
    restored.clear()
    restore_rng(
        {**snapshot, "cuda": [states[0], states[1]]}, torch.device("cuda", 0)
    )  # a state from before rng_ranks
    assert torch.equal(restored[0], states[0])


def test_ensemble_under_torchrun_combines_on_rank_0_only(monkeypatch, tmp_path):
    from cxr_core.training import ensembling
    from cxr_core.training.config import EnsembleConfig

    recipe = EnsembleConfig(members=["a.yaml", "b.yaml"], out_dir=str(tmp_path / "ens"))
    member = type("C", (), {"device": "cpu", "task": "classification"})()
    monkeypatch.setattr(ensembling, "load_config", lambda path: member)
    monkeypatch.setattr(
        ensembling, "_trained_member", lambda config, progress, ctx: tmp_path / "member"
    )
    monkeypatch.setattr(ensembling, "combine_checkpoints", lambda *a, **k: {"combined": True})
    monkeypatch.setattr(distributed.dist, "barrier", lambda *a, **k: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    destroyed = []
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: destroyed.append(1))
    for rank, expected in ((0, {"combined": True}), (1, None)):
        ctx = DistContext(
            rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"), owns_group=True
        )
        monkeypatch.setattr(ensembling, "init_distributed", lambda device, ctx=ctx: ctx)
        assert ensembling.train_ensemble(recipe, progress=False) == expected
    assert destroyed == [1, 1]  # one process group for all members, left once at the end
