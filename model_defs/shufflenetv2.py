"""ShuffleNetV2.

Paper: "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design" (Ma et al., ECCV 2018).

Each unit splits the channels in two: one half passes through untouched (stride 1) or through a
depthwise-separable shortcut (stride 2), the other through 1x1 -> depthwise 3x3 -> 1x1; the halves
are concatenated and shuffled with 2 groups. The module names are torchvision's (``conv1``,
``stage2.0.branch1``, ``conv5``, ``fc``), so its checkpoints load without a remap.

Export: the shuffle names only the channel axis (``_layers.channel_shuffle``), so the batch stays
dynamic (../shared/families.md P-SHUF); ``chunk(2)`` becomes an ONNX Split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import channel_shuffle, global_avg_pool
from ._registry import register_model


def _depthwise_bn(channels: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False), nn.BatchNorm2d(channels)]


def _pointwise_bn_relu(in_chs: int, out_chs: int) -> list[nn.Module]:
    return [nn.Conv2d(in_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]


class ShuffleV2Block(nn.Module):
    """Stride 1: split -> (identity | 1x1, dw 3x3, 1x1) -> concat -> shuffle.
    Stride 2: (dw 3x3 s2, 1x1 | 1x1, dw 3x3 s2, 1x1) on the whole input -> concat -> shuffle."""

    def __init__(self, in_chs: int, out_chs: int, stride: int):
        super().__init__()
        branch_chs = out_chs // 2
        if stride == 1 and in_chs != 2 * branch_chs:
            raise ValueError(f"a stride-1 ShuffleNetV2 unit keeps its width; got {in_chs} -> {out_chs} channels")
        self.stride = stride
        if stride > 1:
            self.branch1 = nn.Sequential(*_depthwise_bn(in_chs, stride), *_pointwise_bn_relu(in_chs, branch_chs))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            *_pointwise_bn_relu(in_chs if stride > 1 else branch_chs, branch_chs),
            *_depthwise_bn(branch_chs, stride),
            *_pointwise_bn_relu(branch_chs, branch_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            passthrough, x = x.chunk(2, dim=1)
            out = torch.cat((passthrough, self.branch2(x)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, stage_repeats: tuple[int, ...], stage_out_channels: tuple[int, ...], num_classes: int = 1000,
                 in_chans: int = 3):
        super().__init__()
        stem_chs, *stage_chs, head_chs = stage_out_channels
        if len(stage_chs) != len(stage_repeats):
            raise ValueError(f"ShuffleNetV2 needs a width per stage plus stem and head; got {stage_out_channels}")
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_chs), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_chs = stem_chs
        for index, (repeats, out_chs) in enumerate(zip(stage_repeats, stage_chs, strict=True)):
            blocks = [ShuffleV2Block(in_chs, out_chs, 2)]
            blocks += [ShuffleV2Block(out_chs, out_chs, 1) for _ in range(repeats - 1)]
            self.add_module(f"stage{index + 2}", nn.Sequential(*blocks))
            in_chs = out_chs
        self.conv5 = nn.Sequential(*_pointwise_bn_relu(in_chs, head_chs))
        self.fc = nn.Linear(head_chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg_pool(self.forward_features(x)).flatten(1))


@dataclass(frozen=True)
class ShuffleNetV2Config:
    stage_out_channels: tuple[int, int, int, int, int]  # stem, stage2, stage3, stage4, conv5
    stage_repeats: tuple[int, int, int] = (4, 8, 4)


_CONFIGS = {
    "shufflenet_v2_x0_5": ShuffleNetV2Config((24, 48, 96, 192, 1024)),
    "shufflenet_v2_x1_0": ShuffleNetV2Config((24, 116, 232, 464, 1024)),
    "shufflenet_v2_x1_5": ShuffleNetV2Config((24, 176, 352, 704, 1024)),
    "shufflenet_v2_x2_0": ShuffleNetV2Config((24, 244, 488, 976, 2048)),
}


def _create_shufflenetv2(name: str, **overrides) -> ShuffleNetV2:
    cfg = _CONFIGS[name]
    return ShuffleNetV2(cfg.stage_repeats, cfg.stage_out_channels, **overrides)


_PAPER = "Ma et al., ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design, ECCV 2018"
# torchvision's eval transforms: bilinear, crop 224 of a 256 resize (x0.5, x1.0) or of 232 (x1.5, x2.0).
_TV_256 = dict(family="shufflenetv2", paper=_PAPER, crop_pct=224 / 256)
_TV_232 = dict(family="shufflenetv2", paper=_PAPER, crop_pct=224 / 232)


@register_model(**_TV_256, reference="torchvision:shufflenet_v2_x0_5", reference_params=1_366_792)
def shufflenet_v2_x0_5(**overrides) -> ShuffleNetV2:
    return _create_shufflenetv2("shufflenet_v2_x0_5", **overrides)


@register_model(**_TV_256, reference="torchvision:shufflenet_v2_x1_0", reference_params=2_278_604)
def shufflenet_v2_x1_0(**overrides) -> ShuffleNetV2:
    return _create_shufflenetv2("shufflenet_v2_x1_0", **overrides)


@register_model(**_TV_232, reference="torchvision:shufflenet_v2_x1_5", reference_params=3_503_624)
def shufflenet_v2_x1_5(**overrides) -> ShuffleNetV2:
    return _create_shufflenetv2("shufflenet_v2_x1_5", **overrides)


@register_model(**_TV_232, reference="torchvision:shufflenet_v2_x2_0", reference_params=7_393_996)
def shufflenet_v2_x2_0(**overrides) -> ShuffleNetV2:
    return _create_shufflenetv2("shufflenet_v2_x2_0", **overrides)
