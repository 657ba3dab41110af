"""ResNeSt.

Paper: "ResNeSt: Split-Attention Networks" (Zhang et al., CVPR Workshops 2022; arXiv:2004.08955).

A ResNeSt bottleneck replaces the 3x3 conv of a ResNet-D bottleneck (deep stem, average-pool
shortcuts: :class:`model_defs.resnet.ResNet`'s options) with split attention: a grouped 3x3 conv
makes ``radix`` feature maps side by side, their sum is pooled and squeezed through two 1x1 convs
into one logit per radix and channel, a softmax across the radix turns the logits into weights, and
the output is the weighted sum of the radix maps. Where the block strides, the conv stays at stride 1
and a 3x3 average pool after it strides instead ("avd"; timm's ``avd_first=False`` for the four
variants here, so the pool sits between the split attention and the last 1x1 conv; timm never sets the
official repo's ``is_first``, so layer1.0 has no pool). The module names are timm's (``conv1.0``,
``layer1.0.conv2.fc1``, ``layer2.0.downsample.1``), so its checkpoints load without a remap.

Export pitfall P-5D (5-D views, softmax on a non-last axis): timm views the (B, radix*C, H, W) map as
(B, radix, C, H, W) with sizes read from the traced shape, a Shape/Gather/Concat chain that onnxsim
cannot fold under a dynamic batch. Here the radix maps are channel chunks (ONNX Split + Add), so no
5-D tensor exists. The radix softmax keeps timm's layout on the (B, radix*C, 1, 1) logits -- view as
(B, cardinality, radix, C/cardinality), transpose to put the radix on axis 1, softmax there -- with
every size but the batch a Python int: each Reshape's shape is a constant with -1 for the batch, and the
Softmax runs on axis 1 as the reference computes it. ``tests/test_family_resnest.py`` checks that
graph on ONNX Runtime at batch 1 and 3, and the layout against timm's ``SplitAttn`` with cardinality 2.
The pools export as they are: avd as AveragePool(3, 2, pads 1, count_include_pad=1), the shortcuts'
as AveragePool(2, 2, ceil_mode=1, count_include_pad=0); the only adaptive pool is the global one
(no P-ADAPT), so any multiple of 32 from 32 up is a valid ``--img-size``.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import global_avg_pool, make_divisible
from ._registry import register_model
from .resnet import ResNet


class SplitAttn(nn.Module):
    """Split attention over ``radix`` maps of ``channels`` each, in ``cardinality`` groups, at stride 1.

    The squeeze width is ``radix * channels / 4`` rounded to a multiple of 8, at least 32 (timm's
    ``rd_ratio=0.25``, ``min_value=32``). Radix 1 (a sigmoid gate, SE-like) is not a ResNeSt variant here.
    """

    def __init__(self, channels: int, radix: int = 2, cardinality: int = 1):
        super().__init__()
        if radix < 2:
            raise ValueError(f"SplitAttn needs radix >= 2; got {radix}")
        self.channels, self.radix, self.cardinality = channels, radix, cardinality
        attn_chs = make_divisible(channels * radix * 0.25, 8, min_value=32)
        self.conv = nn.Conv2d(channels, channels * radix, 3, 1, 1, groups=cardinality * radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(channels, attn_chs, 1, groups=cardinality)
        self.bn1 = nn.BatchNorm2d(attn_chs)
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_chs, channels * radix, 1, groups=cardinality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act0(self.bn0(self.conv(x)))  # (B, radix*C, H, W): the radix maps side by side
        # Mean of the sum = sum of the means: pooling first keeps the Split + Add on (B, radix*C, 1, 1).
        gap = self._sum_radix(global_avg_pool(x))
        logits = self.fc2(self.act1(self.bn1(self.fc1(gap))))
        return self._sum_radix(x * self._radix_softmax(logits))

    def _radix_softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """timm's RadixSoftmax on (B, radix*C, 1, 1). fc2's channels run (group, radix, j); the softmax
        normalises across the radix within a group and lays the weights out (radix, group, j), so that
        channel chunk r weights radix map r. The batch is the only -1: no shape is read from the trace."""
        rest = self.channels // self.cardinality
        attn = logits.reshape(-1, self.cardinality, self.radix, rest).transpose(1, 2).softmax(dim=1)
        return attn.reshape(-1, self.radix * self.channels, 1, 1)

    def _sum_radix(self, x: torch.Tensor) -> torch.Tensor:
        """(B, radix*C, ...) -> (B, C, ...): the sum of the radix channel chunks (ONNX Split + Add)."""
        return functools.reduce(operator.add, x.split(self.channels, dim=1))  # a Python int: one constant Split


class ResNestBottleneck(nn.Module):
    """1x1 conv -> split attention (3x3, stride 1) -> [3x3 average pool, stride 2] -> 1x1 conv, plus the
    shortcut. Split attention ends in its weighted sum: no BN or ReLU follows it (timm's ``bn2`` and
    ``act2`` are identities)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, radix: int = 2):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = SplitAttn(width, radix, groups)
        # avd: count_include_pad stays True (PyTorch's default, and timm's), so border means count the zeros.
        self.avd_last = nn.AvgPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.bn3(self.conv3(self.avd_last(self.conv2(x))))
        return self.relu(x + shortcut)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


def _create_resnest(name: str, **overrides) -> ResNet:
    """Each block's last BN starts at zero, as in timm, so on random weights the residual branches (split
    attention included) add nothing. Live branches are no option there: with BN statistics fitted to
    photos the residual sums grow block by block on the validator's Gaussian inputs (resnest50d: logits
    near 245, float32 itself 2e-4 of that off float64, ONNX Runtime 1.45e-3, over the FP32 budget)."""
    cfg = _CONFIGS[name]
    return ResNet(ResNestBottleneck, cfg.layers, stem_width=cfg.stem_width, avg_down=True,
                  block_args={"radix": 2}, **overrides)


@dataclass(frozen=True)
class ResNestConfig:
    layers: tuple[int, int, int, int]  # blocks per stage
    stem_width: int  # the deep stem's first two convs; it ends at twice this ("d": 32, "e": 64)


# All four: radix 2, cardinality 1, base width 64, deep stem, average-pool shortcuts, avd.
_CONFIGS = {
    "resnest14d": ResNestConfig((1, 1, 1, 1), 32),
    "resnest26d": ResNestConfig((2, 2, 2, 2), 32),
    "resnest50d": ResNestConfig((3, 4, 6, 3), 32),
    "resnest101e": ResNestConfig((3, 4, 23, 3), 64),
}

_PAPER = "Zhang et al., ResNeSt: Split-Attention Networks, CVPR Workshops 2022 (arXiv:2004.08955)"


@register_model(family="resnest", paper=_PAPER, reference="timm:resnest14d", reference_params=10_611_688)
def resnest14d(**overrides) -> ResNet:
    return _create_resnest("resnest14d", **overrides)


@register_model(family="resnest", paper=_PAPER, reference="timm:resnest26d", reference_params=17_069_448)
def resnest26d(**overrides) -> ResNet:
    return _create_resnest("resnest26d", **overrides)


@register_model(family="resnest", paper=_PAPER, reference="timm:resnest50d", reference_params=27_483_240)
def resnest50d(**overrides) -> ResNet:
    return _create_resnest("resnest50d", **overrides)


@register_model(family="resnest", paper=_PAPER, reference="timm:resnest101e", reference_params=48_275_016,
                input_size=(3, 256, 256))
def resnest101e(**overrides) -> ResNet:
    return _create_resnest("resnest101e", **overrides)
