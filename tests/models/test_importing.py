"""Importing state dicts trained elsewhere: key layouts, refusals, and predictions equal to the original."""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from cxr_core.cli.main import main
from cxr_core.data.imaging import load_image
from cxr_core.data.labels import NIH14, XRV18
from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor, range_mean_std
from cxr_core.errors import CheckpointError, ConfigError
from cxr_core.inference.predictor import Predictor
from cxr_core.models.checkpoint import load_checkpoint
from cxr_core.models.importing import file_sha256, import_weights, map_state_dict

xrv = pytest.importorskip("torchxrayvision")


@pytest.fixture(scope="module")
def nih_images(nih14_root):
    return [load_image(p) for p in sorted((nih14_root / "images").glob("*.png"))[:2]]


class CheXNet(nn.Module):
    """The common CheXNet reimplementation: torchvision DenseNet121 as ``densenet121`` with a
    ``Sequential(Linear, Sigmoid)`` classifier, trained inside ``DataParallel``."""

    def __init__(self, num_classes: int = 14) -> None:
        super().__init__()
        self.densenet121 = torchvision.models.densenet121(weights=None)
        self.densenet121.classifier = nn.Sequential(nn.Linear(1024, num_classes), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.densenet121(x)


def _legacy(state: dict) -> OrderedDict:
    """Keys as torchvision wrote them in 2017 (``norm.1``), which CheXNet files carry."""
    return OrderedDict(
        (re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k), v)
        for k, v in state.items()
    )


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a buffer that failed to load would change the output."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


@pytest.mark.slow
def test_torchvision_densenet_pth_predicts_like_the_original(tmp_path, nih_images, capsys):
    torch.manual_seed(0)
    original = _randomise_bn(torchvision.models.densenet121(weights=None, num_classes=14))
    torch.save(original.state_dict(), tmp_path / "densenet121.pth")
    assert (
        main(
            [
                "import",
                "--weights",
                str(tmp_path / "densenet121.pth"),
                "--arch",
                "densenet121",
                "--classes",
                "nih14",
                "--out",
                str(tmp_path / "imported"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "renamed the head classifier.* to classifier.1.*" in out

    checkpoint = tmp_path / "imported" / "model.safetensors"
    card = load_checkpoint(checkpoint).card
    assert (
        card.provenance
        == f"imported from densenet121.pth, sha256 {file_sha256(tmp_path / 'densenet121.pth')}"
    )
    assert card.classes == NIH14.classes and card.in_chans == 3
    predictor = Predictor.from_checkpoint(checkpoint, device="cpu")
    batch = predictor.prepare(nih_images)
    with torch.no_grad():
        expected = torch.sigmoid(original(batch)).numpy()
    got = predictor.predict_probabilities(nih_images)
    assert np.abs(got - expected).max() <= 1e-5
    assert np.ptp(expected) > 1e-3


@pytest.mark.slow
def test_chexnet_dataparallel_layout_with_legacy_keys(tmp_path, nih_images):
    torch.manual_seed(1)
    original = _randomise_bn(CheXNet(), seed=1)
    wrapped = {f"module.{k}": v for k, v in _legacy(original.state_dict()).items()}
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in wrapped
    torch.save(
        {"epoch": 7, "best_loss": 0.15, "state_dict": wrapped}, tmp_path / "m-25012018.pth.tar.pth"
    )
    result = import_weights(
        tmp_path / "m-25012018.pth.tar.pth",
        "densenet121",
        NIH14,
        tmp_path / "out" / "model.safetensors",
    )
    assert any("densenet121." in s for s in result.report.steps)
    assert any("classifier.0.* to classifier.1.*" in s for s in result.report.steps)
    assert any("norm.1 -> norm1" in s for s in result.report.steps)
    predictor = Predictor.from_checkpoint(result.path, device="cpu")
    batch = predictor.prepare(nih_images)
    with torch.no_grad():
        expected = original(batch).numpy()  # CheXNet's own sigmoid output
    assert np.abs(predictor.probabilities_of(batch) - expected).max() <= 1e-5


@pytest.mark.slow
def test_torchxrayvision_densenet_range_and_operating_points(tmp_path, nih_images):
    torch.manual_seed(2)
    original = _randomise_bn(xrv.models.DenseNet(weights=None), seed=2)
    state = original.state_dict()
    points = torch.full((18,), float("nan"))
    points[:5] = torch.tensor([0.07, 0.04, 0.1, 0.01, 0.02])
    state["op_threshs"] = points
    torch.save(state, tmp_path / "xrv.pt")
    result = import_weights(
        tmp_path / "xrv.pt",
        "densenet121",
        XRV18,
        tmp_path / "out" / "model.safetensors",
        preprocess="xrv",
    )
    card = result.card
    assert card.in_chans == 1 and card.get_preprocess().input_size == 224
    assert card.thresholds == pytest.approx(
        {c: float(p) for c, p in zip(XRV18.classes[:5], points[:5])}
    )

    # The preprocessing is torchxrayvision's own normalisation of an 8-bit image to [-1024, 1024].
    pixels = np.asarray(nih_images[0].pixels * 255).round().astype(np.uint8)[:224, :224]
    ours = eval_tensor(pixels, card.get_preprocess())[0].numpy()
    np.testing.assert_allclose(
        ours, xrv.datasets.normalize(pixels.astype(np.float32), 255), atol=2e-3
    )

    predictor = Predictor.from_checkpoint(result.path, device="cpu")
    batch = predictor.prepare(nih_images)
    assert float(batch.min()) >= -1024.01 and float(batch.max()) <= 1024.01
    with torch.no_grad():
        expected = torch.sigmoid(original(batch)).numpy()
    assert np.abs(predictor.probabilities_of(batch) - expected).max() <= 1e-5


def test_torchxrayvision_resnet_layout(tmp_path):
    """xrv.models.ResNet wraps a 1-channel torchvision ResNet-50 as ``model`` (its constructor needs
    downloaded weights, so the same module is built here)."""
    inner = torchvision.models.resnet50(weights=None, num_classes=18)
    inner.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    state = {f"model.{k}": v for k, v in inner.eval().state_dict().items()}
    state["op_threshs"] = torch.rand(18) * 0.3
    mapped, report = map_state_dict(state, "resnet50", XRV18.classes)
    assert report.in_chans == 1 and "fc.1.weight" in mapped and len(report.operating_points) == 18
    assert torch.equal(mapped["fc.1.weight"], inner.fc.weight)


def test_mismatches_are_refused_with_the_layer_named(tmp_path):
    state = torchvision.models.densenet121(weights=None, num_classes=14).state_dict()
    with pytest.raises(
        CheckpointError, match=r"classifier\.1\.weight has 14 outputs but 18 classes"
    ):
        map_state_dict(state, "densenet121", XRV18.classes)
    bad = dict(state)
    bad["features.denseblock1.denselayer1.conv1.weight"] = torch.zeros(128, 64, 3, 3)
    with pytest.raises(
        CheckpointError,
        match=r"tensors of another shape \[features\.denseblock1\.denselayer1\.conv1\.weight",
    ):
        map_state_dict(bad, "densenet121", NIH14.classes)
    partial = {k: v for k, v in state.items() if not k.startswith("features.denseblock4")}
    with pytest.raises(
        CheckpointError, match=r"missing tensors \[features\.denseblock4\.denselayer1"
    ):
        map_state_dict(partial, "densenet121", NIH14.classes)
    with pytest.raises(CheckpointError, match=r"unexpected tensors \[features\.conv0\.weight"):
        map_state_dict(state, "resnet50", NIH14.classes)


def test_code_carrying_pickles_and_3_channel_xrv_are_refused(tmp_path):
    torch.save(
        {"state_dict": torchvision.models.resnet18(weights=None)}, tmp_path / "whole_module.pth"
    )
    with pytest.raises(CheckpointError, match="cannot read weights"):
        import_weights(
            tmp_path / "whole_module.pth", "resnet50", NIH14, tmp_path / "o" / "model.safetensors"
        )
    torch.save(
        torchvision.models.densenet121(weights=None, num_classes=14).state_dict(),
        tmp_path / "rgb.pth",
    )
    with pytest.raises(ConfigError, match="1-channel"):
        import_weights(
            tmp_path / "rgb.pth",
            "densenet121",
            NIH14,
            tmp_path / "o" / "model.safetensors",
            preprocess="xrv",
        )
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_bare_safetensors_imports(tmp_path):
    from safetensors.torch import save_file

    model = torchvision.models.resnet50(weights=None, num_classes=14).eval()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp_path / "bare.safetensors"),
    )
    result = import_weights(
        tmp_path / "bare.safetensors", "resnet50", NIH14, tmp_path / "o" / "model.safetensors"
    )
    rebuilt = load_checkpoint(result.path).build_model()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-5)


def test_range_mean_std():
    mean, std = range_mean_std(-1024, 1024)
    cfg = PreprocessConfig(mean=mean, std=std, in_chans=1, input_size=8, cache_size=8)
    x = eval_tensor(np.array([[0, 255] * 4] * 8, dtype=np.uint8), cfg)
    assert float(x.min()) == pytest.approx(-1024) and float(x.max()) == pytest.approx(1024)
    with pytest.raises(ConfigError):
        range_mean_std(1, 1)
