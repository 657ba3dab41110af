"""ResNet, ResNeXt and Wide-ResNet.

Papers: "Deep Residual Learning for Image Recognition" (He et al., CVPR 2016);
"Aggregated Residual Transformations for Deep Neural Networks" (Xie et al., CVPR 2017);
"Wide Residual Networks" (Zagoruyko & Komodakis, BMVC 2016).

This is ResNet v1.5: the stride of a downsampling bottleneck sits on the 3x3 conv. The module
names are torchvision's and timm's (``conv1``, ``layer1.0.conv2``, ``fc``), so both libraries'
checkpoints load without a remap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_model


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock takes groups=1 and base_width=64 only")
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.bn2(self.conv2(x))
        return self.relu(x + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        return self.relu(x + shortcut)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int = 1000,
                 groups: int = 1, base_width: int = 64, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_ch != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(in_ch, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            blocks = [block(in_ch, planes, stride, downsample, groups, base_width)]
            in_ch = planes * block.expansion
            blocks += [block(in_ch, planes, 1, None, groups, base_width) for _ in range(depth - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero-init the last BN of each residual branch: every block starts as identity.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@dataclass(frozen=True)
class ResNetConfig:
    block: type[BasicBlock | Bottleneck]
    layers: tuple[int, int, int, int]
    groups: int = 1
    base_width: int = 64


_CONFIGS = {
    "resnet18": ResNetConfig(BasicBlock, (2, 2, 2, 2)),
    "resnet34": ResNetConfig(BasicBlock, (3, 4, 6, 3)),
    "resnet50": ResNetConfig(Bottleneck, (3, 4, 6, 3)),
    "resnet101": ResNetConfig(Bottleneck, (3, 4, 23, 3)),
    "resnet152": ResNetConfig(Bottleneck, (3, 8, 36, 3)),
    "resnext50_32x4d": ResNetConfig(Bottleneck, (3, 4, 6, 3), groups=32, base_width=4),
    "resnext101_32x8d": ResNetConfig(Bottleneck, (3, 4, 23, 3), groups=32, base_width=8),
    "wide_resnet50_2": ResNetConfig(Bottleneck, (3, 4, 6, 3), base_width=128),
}


def _create_resnet(name: str, **overrides) -> ResNet:
    cfg = _CONFIGS[name]
    return ResNet(cfg.block, cfg.layers, groups=cfg.groups, base_width=cfg.base_width, **overrides)


_RESNET = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
_RESNEXT = "Xie et al., Aggregated Residual Transformations for Deep Neural Networks, CVPR 2017"
_WRN = "Zagoruyko & Komodakis, Wide Residual Networks, BMVC 2016"


@register_model(family="resnet", paper=_RESNET, reference="torchvision:resnet18", reference_params=11_689_512)
def resnet18(**overrides) -> ResNet:
    return _create_resnet("resnet18", **overrides)


@register_model(family="resnet", paper=_RESNET, reference="torchvision:resnet34", reference_params=21_797_672)
def resnet34(**overrides) -> ResNet:
    return _create_resnet("resnet34", **overrides)


@register_model(family="resnet", paper=_RESNET, reference="torchvision:resnet50", reference_params=25_557_032)
def resnet50(**overrides) -> ResNet:
    return _create_resnet("resnet50", **overrides)


@register_model(family="resnet", paper=_RESNET, reference="torchvision:resnet101", reference_params=44_549_160)
def resnet101(**overrides) -> ResNet:
    return _create_resnet("resnet101", **overrides)


@register_model(family="resnet", paper=_RESNET, reference="torchvision:resnet152", reference_params=60_192_808)
def resnet152(**overrides) -> ResNet:
    return _create_resnet("resnet152", **overrides)


@register_model(family="resnext", paper=_RESNEXT, reference="torchvision:resnext50_32x4d",
                reference_params=25_028_904)
def resnext50_32x4d(**overrides) -> ResNet:
    return _create_resnet("resnext50_32x4d", **overrides)


@register_model(family="resnext", paper=_RESNEXT, reference="torchvision:resnext101_32x8d",
                reference_params=88_791_336)
def resnext101_32x8d(**overrides) -> ResNet:
    return _create_resnet("resnext101_32x8d", **overrides)


@register_model(family="wide_resnet", paper=_WRN, reference="torchvision:wide_resnet50_2",
                reference_params=68_883_240)
def wide_resnet50_2(**overrides) -> ResNet:
    return _create_resnet("wide_resnet50_2", **overrides)
