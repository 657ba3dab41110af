"""ResNet, ResNeXt and Wide-ResNet.

Papers: "Deep Residual Learning for Image Recognition" (He et al., CVPR 2016);
"Aggregated Residual Transformations for Deep Neural Networks" (Xie et al., CVPR 2017);
"Wide Residual Networks" (Zagoruyko & Komodakis, BMVC 2016).

This is ResNet v1.5: the stride of a downsampling bottleneck sits on the 3x3 conv. The module
names are torchvision's and timm's (``conv1``, ``layer1.0.conv2``, ``fc``), so both libraries'
checkpoints load without a remap.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (grouped) -> 1x1 with BNs, then an optional channel attention on the residual branch
    (``attn_layer(channels)``, under timm's name ``se``). The keyword-only options are the SE-ResNets'
    (senet.py): ``stride_in_1x1`` puts the stride on the first 1x1 as the original Caffe ResNet did
    (v1 rather than v1.5); ``reduce_first`` narrows the first 1x1 to ``width // reduce_first``."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, *, reduce_first: int = 1, stride_in_1x1: bool = False,
                 attn_layer: Callable[[int], nn.Module] | None = None):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        first_width = width // reduce_first
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_ch, first_width, 1, stride_1x1, bias=False)
        self.bn1 = nn.BatchNorm2d(first_width)
        self.conv2 = nn.Conv2d(first_width, width, 3, stride_3x3, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.se = attn_layer(planes * self.expansion) if attn_layer is not None else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        return self.relu(x + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


def deep_stem(in_chans: int, width: int) -> nn.Sequential:
    """timm's "deep" stem (ResNet-C of Bag of Tricks, He et al. 2019): three 3x3 convs, the first at
    stride 2, ending at ``2 * width`` channels. A flat Sequential, because its indices (0, 1, 3, 4, 6)
    are timm's checkpoint keys."""
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False),
    )


def shortcut_projection(in_ch: int, out_ch: int, stride: int, avg_down: bool = False,
                        kernel_size: int = 1) -> nn.Sequential:
    """The 1x1 conv + BN of a shortcut that changes width or resolution. ``avg_down`` (ResNet-D) moves
    the stride to a 2x2 average pool before the conv, which then sees every pixel; ceil mode without
    padded zeros, as timm, so an odd side averages only real pixels. The pool is an Identity at stride 1
    to keep timm's key indices. Without ``avg_down``, a strided projection may take a larger, padded
    ``kernel_size`` (SENet-154's 3x3); at stride 1 it stays 1x1, as in timm and Caffe."""
    if not avg_down:
        kernel_size = kernel_size if stride > 1 else 1
        return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False),
                             nn.BatchNorm2d(out_ch))
    pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
    return nn.Sequential(pool, nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))


class ResNet(nn.Module):
    """The ResNet trunk. The keyword-only options are timm's for its ResNet-D line and the families
    built on this trunk: ``stem_width`` (non-zero) replaces the 7x7 stem by :func:`deep_stem`,
    ``avg_down`` shortcuts through :func:`shortcut_projection`'s average pool and ``down_kernel`` is its
    strided conv's kernel, ``block_args`` go to every block. ``caffe_pool`` is the Caffe SENets' stem pool,
    ``MaxPool(3, 2, ceil_mode=True)`` without padding."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...], num_classes: int = 1000,
                 groups: int = 1, base_width: int = 64, in_chans: int = 3, *, stem_width: int = 0,
                 avg_down: bool = False, down_kernel: int = 1, caffe_pool: bool = False,
                 block_args: dict | None = None):
        super().__init__()
        in_ch = 2 * stem_width if stem_width else 64
        self.conv1 = deep_stem(in_chans, stem_width) if stem_width else nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True) if caffe_pool else nn.MaxPool2d(3, 2, 1)
        block_args = block_args or {}
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_ch != planes * block.expansion:
                downsample = shortcut_projection(in_ch, planes * block.expansion, stride, avg_down, down_kernel)
            blocks = [block(in_ch, planes, stride, downsample, groups, base_width, **block_args)]
            in_ch = planes * block.expansion
            blocks += [block(in_ch, planes, 1, None, groups, base_width, **block_args) for _ in range(depth - 1)]
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
            if hasattr(m, "zero_init_last"):
                m.zero_init_last()

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
    "resnext101_64x4d": ResNetConfig(Bottleneck, (3, 4, 23, 3), groups=64, base_width=4),
    "wide_resnet50_2": ResNetConfig(Bottleneck, (3, 4, 6, 3), base_width=128),
    "wide_resnet101_2": ResNetConfig(Bottleneck, (3, 4, 23, 3), base_width=128),
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


@register_model(family="resnext", paper=_RESNEXT, reference="torchvision:resnext101_64x4d",
                reference_params=83_455_272)
def resnext101_64x4d(**overrides) -> ResNet:
    return _create_resnet("resnext101_64x4d", **overrides)


@register_model(family="wide_resnet", paper=_WRN, reference="torchvision:wide_resnet50_2",
                reference_params=68_883_240)
def wide_resnet50_2(**overrides) -> ResNet:
    return _create_resnet("wide_resnet50_2", **overrides)


@register_model(family="wide_resnet", paper=_WRN, reference="torchvision:wide_resnet101_2",
                reference_params=126_886_696)
def wide_resnet101_2(**overrides) -> ResNet:
    return _create_resnet("wide_resnet101_2", **overrides)
