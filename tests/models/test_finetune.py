"""Fine-tuning policies: exactly the intended parameters train; frozen BatchNorm keeps its statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.models import (
    apply_finetune,
    create_model,
    freeze_bn_stats,
    get_model_spec,
)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnet():
    return create_model("resnet50", 14)


@pytest.fixture
def small():
    torch.manual_seed(0)
    return create_model("small_cnn", 3)


def test_nih_recipe_prefixes_on_resnet50(resnet):
    n = apply_finetune(resnet, "resnet50", ["layer2", "layer3", "layer4"])
    expected = sum(_count(getattr(resnet, m)) for m in ("layer2", "layer3", "layer4", "fc"))
    assert n == expected
    trainable = {name.split(".")[0] for name, p in resnet.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4", "fc"}
    assert apply_finetune(resnet, "resnet50", "layer2, layer3,layer4") == expected


def test_all_and_head(resnet):
    assert apply_finetune(resnet, "resnet50", "all") == _count(resnet)
    assert apply_finetune(resnet, "resnet50", "head") == _count(resnet.fc) == 2048 * 14 + 14
    assert not any(p.requires_grad for p in resnet.layer4.parameters())
    assert apply_finetune(resnet, "resnet50", "all") == _count(resnet)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_last_n_blocks(small, n):
    blocks = get_model_spec("small_cnn").blocks(small)
    expected = sum(_count(m) for _, m in blocks[-n:]) + _count(small.classifier)
    assert apply_finetune(small, "small_cnn", f"last:{n}") == expected
    assert all(
        p.requires_grad == (i >= len(blocks) - n)
        for i, (_, m) in enumerate(blocks)
        for p in m.parameters()
    )


def test_last_n_on_grouped_densenet_blocks():
    model = create_model("densenet121", 2)
    n = apply_finetune(model, "densenet121", "last:1")
    assert n == _count(model.features.denseblock4) + _count(model.features.norm5) + _count(
        model.classifier
    )


@pytest.mark.parametrize("policy", ["last:0", "last:6", "last:x", ["layer9"], "heads", "", []])
def test_bad_policies(small, policy):
    with pytest.raises(ConfigError):
        apply_finetune(small, "small_cnn", policy)


def test_frozen_parts_do_not_move_in_a_training_step(small):
    apply_finetune(small, "small_cnn", "last:1")
    before = {k: v.clone() for k, v in small.state_dict().items()}
    small.train()
    assert freeze_bn_stats(small) == 4  # BN of blocks 0-3; block 4 trains
    opt = torch.optim.SGD([p for p in small.parameters() if p.requires_grad], lr=0.1)
    x = torch.rand(4, 3, 64, 64) * 3
    loss = small(x).square().mean()
    loss.backward()
    opt.step()
    after = small.state_dict()
    for key in before:
        changed = not torch.equal(before[key], after[key])
        trains = key.startswith(("features.4.", "classifier."))
        assert changed == trains, key  # frozen BN running stats included


def test_freeze_bn_stats_is_a_no_op_when_everything_trains(small):
    apply_finetune(small, "small_cnn", "all")
    small.train()
    assert freeze_bn_stats(small) == 0
    assert all(m.training for m in small.modules())
