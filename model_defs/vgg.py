"""VGG-11/13/16/19 and their batch-normalized twins.

Paper: "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman,
ICLR 2015), configurations A (11 weight layers), B (13), D (16) and E (19): stacks of 3x3 convs
(padding 1) with ReLU, five 2x2 max pools (stride 2), then three fully connected layers (4096, 4096,
classes) with dropout. The ``_bn`` variants put a BatchNorm after every conv: torchvision's addition,
not the paper's. The first fully connected layer holds 102.8M of the 133-144M parameters.

The module layout is torchvision's (``features.<i>``, ``avgpool``, ``classifier.<i>``), so its
checkpoints load without a remap.

Export pitfall P-ADAPT: torchvision pools the last feature map to 7x7 with ``AdaptiveAvgPool2d``
before the classifier. At 224 that map is already 7x7 and the pool is the identity, but at a size
whose map side is not a multiple of 7 (64 -> 2x2, 256 -> 8x8) the TorchScript exporter refuses it.
``_layers.AdaptiveAvgPool2dStatic`` computes torchvision's numbers at every
size as two MatMuls with constant bin-averaging matrices, built from the spatial size the export
traces (static: only the batch is dynamic), and adds no node at 224. So every size the spec admits
(multiples of 32 from 32 on: the network's total stride) exports and matches torchvision; any other
is rejected in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import AdaptiveAvgPool2dStatic
from ._registry import register_model

# Conv widths of the five stages (all configurations); the classifier sees a 7x7 map of the last.
_WIDTHS = (64, 128, 256, 512, 512)
_POOLED = 7


def _make_features(depths: tuple[int, ...], batch_norm: bool, in_chans: int) -> nn.Sequential:
    """Conv 3x3 (+ BN) + ReLU, ``depth`` times per stage, then a 2x2 max pool: one flat Sequential, so
    the indices (``features.0``, ``features.3``, ...) are torchvision's."""
    layers: list[nn.Module] = []
    in_ch = in_chans
    for width, depth in zip(_WIDTHS, depths, strict=True):
        for _ in range(depth):
            layers.append(nn.Conv2d(in_ch, width, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            in_ch = width
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, depths: tuple[int, ...], batch_norm: bool = False, num_classes: int = 1000,
                 in_chans: int = 3):
        super().__init__()
        self.features = _make_features(depths, batch_norm, in_chans)
        self.avgpool = AdaptiveAvgPool2dStatic(_POOLED)
        self.classifier = nn.Sequential(
            nn.Linear(_WIDTHS[-1] * _POOLED * _POOLED, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation, so random-weight drift runs see its activation scales."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@dataclass(frozen=True)
class VGGConfig:
    depths: tuple[int, int, int, int, int]  # 3x3 convs per stage (paper Table 1)
    batch_norm: bool = False


_CONFIGS = {
    "vgg11": VGGConfig((1, 1, 2, 2, 2)),  # A
    "vgg13": VGGConfig((2, 2, 2, 2, 2)),  # B
    "vgg16": VGGConfig((2, 2, 3, 3, 3)),  # D
    "vgg19": VGGConfig((2, 2, 4, 4, 4)),  # E
    "vgg11_bn": VGGConfig((1, 1, 2, 2, 2), batch_norm=True),
    "vgg13_bn": VGGConfig((2, 2, 2, 2, 2), batch_norm=True),
    "vgg16_bn": VGGConfig((2, 2, 3, 3, 3), batch_norm=True),
    "vgg19_bn": VGGConfig((2, 2, 4, 4, 4), batch_norm=True),
}


def _create_vgg(name: str, **overrides) -> VGG:
    cfg = _CONFIGS[name]
    return VGG(cfg.depths, batch_norm=cfg.batch_norm, **overrides)


_PAPER = "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, ICLR 2015"


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg11", reference_params=132_863_336)
def vgg11(**overrides) -> VGG:
    return _create_vgg("vgg11", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg11_bn", reference_params=132_868_840)
def vgg11_bn(**overrides) -> VGG:
    return _create_vgg("vgg11_bn", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg13", reference_params=133_047_848)
def vgg13(**overrides) -> VGG:
    return _create_vgg("vgg13", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg13_bn", reference_params=133_053_736)
def vgg13_bn(**overrides) -> VGG:
    return _create_vgg("vgg13_bn", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg16", reference_params=138_357_544)
def vgg16(**overrides) -> VGG:
    return _create_vgg("vgg16", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg16_bn", reference_params=138_365_992)
def vgg16_bn(**overrides) -> VGG:
    return _create_vgg("vgg16_bn", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg19", reference_params=143_667_240)
def vgg19(**overrides) -> VGG:
    return _create_vgg("vgg19", **overrides)


@register_model(family="vgg", paper=_PAPER, reference="torchvision:vgg19_bn", reference_params=143_678_248)
def vgg19_bn(**overrides) -> VGG:
    return _create_vgg("vgg19_bn", **overrides)
