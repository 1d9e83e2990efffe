"""Registry: every architecture builds, forwards, exposes a usable Grad-CAM layer and head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cxr_core.errors import ConfigError
from cxr_core.models import (
    DEFAULT_MODEL,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)
from cxr_core.models.weights import adapt_first_conv

# channels of the Grad-CAM layer and its spatial size for a 64x64 input
EXPECTED_CAM = {
    "densenet121": (1024, 2),
    "resnet50": (2048, 2),
    "vgg16": (512, 2),
    "efficientnet_b0": (1280, 2),
    "efficientnet_lite0": (1280, 2),
    "efficientnet_lite1": (1280, 2),
    "efficientnet_lite2": (1280, 2),
    "small_cnn": (256, 4),
}

_built: dict[str, nn.Module] = {}


def _model(name: str) -> nn.Module:
    """Each architecture is built once per test session (VGG16 alone takes ~2 s)."""
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = create_model(name, 3, dropout=0.25).eval()
    return _built[name]


def test_registry_lists_every_architecture():
    assert set(list_models()) == set(EXPECTED_CAM)
    assert DEFAULT_MODEL == "densenet121"
    for name in list_models():
        spec = get_model_spec(name)
        assert spec.name == name and spec.description and spec.default_input_size >= 64


@pytest.mark.parametrize("name", sorted(EXPECTED_CAM))
def test_forward_head_and_target_layer(name):
    model = _model(name)
    spec = get_model_spec(name)
    head = model.get_submodule(spec.head)
    assert isinstance(head, nn.Sequential) and isinstance(head[0], nn.Dropout) and head[0].p == 0.25
    assert isinstance(head[1], nn.Linear) and head[1].out_features == 3

    layer = spec.target_layer(model)
    assert any(layer is m for m in model.modules())
    captured = {}

    def keep(_module, _inp, out):
        out.retain_grad()
        captured["act"] = out

    handle = layer.register_forward_hook(keep)
    try:
        x = torch.rand(1, 3, 64, 64)
        out = model(x)
    finally:
        handle.remove()
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    channels, size = EXPECTED_CAM[name]
    assert captured["act"].shape == (1, channels, size, size)
    out[0, 1].backward()
    # Grad-CAM needs the class score to depend on the target layer's activations
    assert captured["act"].grad is not None and captured["act"].grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", sorted(EXPECTED_CAM))
def test_blocks_are_ordered_parts_of_the_model(name):
    model = _model(name)
    blocks = get_model_spec(name).blocks(model)
    assert len(blocks) >= 4
    param_names = [n for n, _ in model.named_parameters()]
    seen: set[int] = set()
    for block_name, module in blocks:
        for prefix in block_name.split("+"):
            assert any(n.startswith(prefix + ".") for n in param_names), prefix
        params = {id(p) for p in module.parameters()}
        assert params and not params & seen  # blocks do not overlap
        seen |= params
    head = {id(p) for p in model.get_submodule(get_model_spec(name).head).parameters()}
    assert not head & seen


@pytest.mark.parametrize("name", sorted(EXPECTED_CAM))
def test_first_conv_is_the_stem(name):
    model = _model(name)
    first = model.get_submodule(get_model_spec(name).first_conv)
    assert first is next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 3 and first.groups == 1


@pytest.mark.parametrize("name", ["densenet121", "efficientnet_lite0", "small_cnn"])
def test_one_channel_input(name):
    model = create_model(name, 2, in_chans=1).eval()
    first = model.get_submodule(get_model_spec(name).first_conv)
    assert first.in_channels == 1 and first.weight.shape[1] == 1
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2)


def test_summed_stem_matches_replicated_gray_input():
    rgb = _model("small_cnn")
    gray = create_model("small_cnn", 3).eval()
    gray.load_state_dict(rgb.state_dict())
    adapt_first_conv(gray, get_model_spec("small_cnn").first_conv, 1)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5)


def test_small_cnn_is_small():
    n = sum(p.numel() for p in _model("small_cnn").parameters())
    assert 300_000 <= n <= 1_000_000


def test_unknown_model_lists_available():
    with pytest.raises(ConfigError, match="densenet121") as info:
        create_model("densenet12", 2)
    assert "small_cnn" in str(info.value)
    with pytest.raises(ConfigError, match="available models"):
        get_model_spec("alexnet")


@pytest.mark.parametrize(
    "kwargs",
    [{"num_classes": 0}, {"num_classes": 2, "in_chans": 4}, {"num_classes": 2, "dropout": 1.0}],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        create_model("small_cnn", **kwargs)


def test_registering_a_name_twice_fails():
    with pytest.raises(ValueError, match="twice"):
        register_model("small_cnn")(lambda num_classes, dropout=0.0: nn.Linear(1, num_classes))
