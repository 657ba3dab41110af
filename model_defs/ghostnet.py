"""GhostNet.

Paper: "GhostNet: More Features from Cheap Operations" (Han et al., CVPR 2020).

A Ghost module makes half of its output channels with an ordinary 1x1 conv and the other half
("ghosts") with a cheap depthwise 3x3 over the first half. Ghost bottlenecks stack two of them
around an optional stride-2 depthwise conv and a hard-sigmoid Squeeze-and-Excitation. The module
names are timm's (``conv_stem``, ``blocks.3.0.ghost1.primary_conv.0``, ``conv_head``), so timm's
GhostNet checkpoints load without a remap.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from ._efficientnet_blocks import BlockOptions, ConvBnAct
from ._layers import SqueezeExcite, make_divisible
from ._registry import register_model


class GhostModule(nn.Module):
    """Primary 1x1 conv to ceil(out/2) channels, cheap depthwise 3x3 over them, concatenated.

    The concat is cut to ``out_chs`` because the two halves overshoot an odd width by one.
    """

    def __init__(self, in_chs: int, out_chs: int, act_layer: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.out_chs = out_chs
        primary_chs = math.ceil(out_chs / 2)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_chs, primary_chs, 1, bias=False),
            nn.BatchNorm2d(primary_chs),
            act_layer(inplace=True),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(primary_chs, primary_chs, 3, 1, 1, groups=primary_chs, bias=False),
            nn.BatchNorm2d(primary_chs),
            act_layer(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        primary = self.primary_conv(x)
        ghosts = self.cheap_operation(primary)
        return torch.cat([primary, ghosts], dim=1)[:, : self.out_chs]


class GhostBottleneck(nn.Module):
    """Ghost module (ReLU) -> [depthwise kxk, stride 2] -> [SE] -> Ghost module (linear), plus a
    shortcut that is the identity, or a depthwise kxk + 1x1 projection where the shape changes."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, kernel_size: int, stride: int, se_ratio: float):
        super().__init__()
        self.ghost1 = GhostModule(in_chs, mid_chs)
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, kernel_size, stride, kernel_size // 2, groups=mid_chs,
                                     bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        else:
            self.conv_dw, self.bn_dw = nn.Identity(), nn.Identity()
        if se_ratio > 0:
            # The SE gate is hard_sigmoid = relu6(x + 3) / 6; nn.Hardsigmoid is that function and
            # the layer timm builds, so the numerics match and ONNX gets one HardSigmoid op.
            self.se = SqueezeExcite(mid_chs, make_divisible(mid_chs * se_ratio, 4), gate_layer=nn.Hardsigmoid)
        else:
            self.se = nn.Identity()
        self.ghost2 = GhostModule(mid_chs, out_chs, act_layer=nn.Identity)
        if in_chs == out_chs and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, kernel_size, stride, kernel_size // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ghost1(x)
        out = self.se(self.bn_dw(self.conv_dw(out)))
        return self.ghost2(out) + self.shortcut(x)


class GhostBlockArgs(NamedTuple):
    kernel_size: int  # k: depthwise kernel of the stride-2 conv and of the projection shortcut
    expansion_chs: int  # t: width of the bottleneck's middle (before the width multiplier)
    out_chs: int  # c: output width (before the width multiplier)
    se_ratio: float  # SE: squeeze ratio, 0 for no SE
    stride: int  # s


def _decode_stage(stage: list[tuple]) -> list[GhostBlockArgs]:
    blocks = []
    for row in stage:
        if len(row) != len(GhostBlockArgs._fields):
            raise ValueError(f"GhostNet block {row!r}: expected (k, t, c, SE, s)")
        blocks.append(GhostBlockArgs(*row))
    return blocks


class GhostNet(nn.Module):
    def __init__(self, stages: list[list[tuple]], width: float = 1.0, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.2):
        super().__init__()
        stem_chs = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        in_chs = stem_chs
        stage_modules = []
        for stage in stages:
            blocks = []
            for args in _decode_stage(stage):
                out_chs = make_divisible(args.out_chs * width, 4)
                mid_chs = make_divisible(args.expansion_chs * width, 4)
                blocks.append(GhostBottleneck(in_chs, mid_chs, out_chs, args.kernel_size, args.stride, args.se_ratio))
                in_chs = out_chs
            stage_modules.append(nn.Sequential(*blocks))
        # The last stage is a lone 1x1 conv up to the last block's expansion width (960 at 1.0x).
        self.num_features = make_divisible(args.expansion_chs * width, 4)
        stage_modules.append(nn.Sequential(ConvBnAct(in_chs, self.num_features, 1, 1, BlockOptions(nn.ReLU))))
        self.blocks = nn.Sequential(*stage_modules)
        # Head: pool first, then a 1x1 conv with bias to 1280 (MobileNetV3's "efficient head").
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.num_features, 1280, 1)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(1280, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv_head(self.global_pool(self.forward_features(x))))
        return self.classifier(self.dropout(self.flatten(x)))


# One list per stage of nn.Sequential blocks (timm's grouping, which fixes the checkpoint keys).
_GHOSTNET_STAGES = [
    # k, t, c, SE, s
    [(3, 16, 16, 0, 1)],
    [(3, 48, 24, 0, 2)],
    [(3, 72, 24, 0, 1)],
    [(5, 72, 40, 0.25, 2)],
    [(5, 120, 40, 0.25, 1)],
    [(3, 240, 80, 0, 2)],
    [(3, 200, 80, 0, 1),
     (3, 184, 80, 0, 1),
     (3, 184, 80, 0, 1),
     (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)],
    [(5, 672, 160, 0.25, 2)],
    [(5, 960, 160, 0, 1),
     (5, 960, 160, 0.25, 1),
     (5, 960, 160, 0, 1),
     (5, 960, 160, 0.25, 1)],
]

_WIDTHS = {"ghostnet_050": 0.5, "ghostnet_100": 1.0, "ghostnet_130": 1.3}


def _create_ghostnet(name: str, **overrides) -> GhostNet:
    return GhostNet(_GHOSTNET_STAGES, width=_WIDTHS[name], **overrides)


_PAPER = "Han et al., GhostNet: More Features from Cheap Operations, CVPR 2020"
# timm's pretrained cfg for every GhostNet: bicubic resize, 0.875 center crop, ImageNet mean/std.
_TIMM_EVAL = dict(family="ghostnet", paper=_PAPER, interpolation="bicubic", crop_pct=0.875)


@register_model(**_TIMM_EVAL, reference="timm:ghostnet_050", reference_params=2_587_292)
def ghostnet_050(**overrides) -> GhostNet:
    return _create_ghostnet("ghostnet_050", **overrides)


@register_model(**_TIMM_EVAL, reference="timm:ghostnet_100", reference_params=5_182_508, aliases=("ghostnet",))
def ghostnet_100(**overrides) -> GhostNet:
    return _create_ghostnet("ghostnet_100", **overrides)


@register_model(**_TIMM_EVAL, reference="timm:ghostnet_130", reference_params=7_358_820)
def ghostnet_130(**overrides) -> GhostNet:
    return _create_ghostnet("ghostnet_130", **overrides)
