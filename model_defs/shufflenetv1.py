"""ShuffleNet (V1), group count 3.

Paper: "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices"
(Zhang et al., CVPR 2018).

Neither timm nor torchvision defines it. The architecture follows the authors' code,
megvii-model/ShuffleNet-Series ``ShuffleNetV1/{network.py,blocks.py}``, whose module names this file
keeps (``first_conv``, ``features.<i>.branch_main_1``, ``classifier.0``) so its checkpoints load
(the exporter strips their DataParallel ``module.`` prefix). Facts taken from that code:

- stem: 3x3 s2 conv-BN-ReLU, then MaxPool(3, 2, 1); stages of 4, 8, 4 units, one flat ``features``;
- unit: grouped 1x1 -> BN -> ReLU -> depthwise 3x3 -> BN -> channel shuffle -> grouped 1x1 -> BN,
  with a bottleneck of a quarter of the unit's output width;
- the very first 1x1 (stage 2, unit 0) is ungrouped: its input, the 24-channel stem, is too thin;
- stride 1: ReLU(branch + x); stride 2: concat(AvgPool(3, 2, 1)(x), ReLU(branch)), so the branch
  makes only ``out - in`` channels;
- the shuffle views the channels as (C/g, g) and transposes (P-SHUF), the inverse of the
  (g, C/g) convention of ShuffleNetV2; the weights were trained with it, so it must stay;
- head: global average pool and a bias-free Linear.

Deliberate departures, for export: the authors' ``channel_shuffle`` reads ``x.data.size()``, which
bakes the batch into the graph; ours names only the channel axis. Their ``AvgPool2d(7)`` head
assumes 224x224 input; a global mean is the same there and works at any size.

Preprocessing (``train.py`` of the same repo): OpenCV bilinear resize of the short side to 256,
center crop 224, **BGR** pixels in 0-255 with no mean/std normalisation.

Parameter counts were produced by instantiating the authors' code (../shared/families.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ._layers import channel_shuffle, global_avg_pool
from ._registry import register_model


class ShuffleV1Block(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, group_first_conv: bool = True):
        super().__init__()
        self.stride = stride
        mid_chs = out_chs // 4
        branch_chs = out_chs - in_chs if stride == 2 else out_chs
        # The megvii (C/g, g) shuffle is the (g', C/g') one with g' = C/g.
        self.shuffle_groups = mid_chs // groups if groups > 1 else 0
        self.branch_main_1 = nn.Sequential(
            nn.Conv2d(in_chs, mid_chs, 1, groups=groups if group_first_conv else 1, bias=False),
            nn.BatchNorm2d(mid_chs),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_chs, mid_chs, 3, stride, 1, groups=mid_chs, bias=False),
            nn.BatchNorm2d(mid_chs),
        )
        self.branch_main_2 = nn.Sequential(
            nn.Conv2d(mid_chs, branch_chs, 1, groups=groups, bias=False),
            nn.BatchNorm2d(branch_chs),
        )
        self.branch_proj = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch_main_1(x)
        if self.shuffle_groups:
            out = channel_shuffle(out, self.shuffle_groups)
        out = self.branch_main_2(out)
        if self.stride == 1:
            return F.relu(out + x)
        return torch.cat((self.branch_proj(x), F.relu(out)), dim=1)


class ShuffleNetV1(nn.Module):
    def __init__(self, stage_out_channels: tuple[int, ...], stage_repeats: tuple[int, ...], groups: int,
                 num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        stem_chs, *stage_chs = stage_out_channels
        self.first_conv = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, 2, 1, bias=False), nn.BatchNorm2d(stem_chs), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units = []
        in_chs = stem_chs
        for stage, (repeats, out_chs) in enumerate(zip(stage_repeats, stage_chs, strict=True)):
            for unit in range(repeats):
                first_of_net = stage == 0 and unit == 0
                units.append(ShuffleV1Block(in_chs, out_chs, 2 if unit == 0 else 1, groups,
                                            group_first_conv=not first_of_net))
                in_chs = out_chs
        self.features = nn.Sequential(*units)
        self.classifier = nn.Sequential(nn.Linear(in_chs, num_classes, bias=False))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.maxpool(self.first_conv(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_avg_pool(self.forward_features(x)).flatten(1))


@dataclass(frozen=True)
class ShuffleNetV1Config:
    stage_out_channels: tuple[int, int, int, int]  # stem, stage2, stage3, stage4
    stage_repeats: tuple[int, int, int] = (4, 8, 4)
    groups: int = 3


_CONFIGS = {
    "shufflenet_v1_g3_x0_5": ShuffleNetV1Config((12, 120, 240, 480)),
    "shufflenet_v1_g3_x1_0": ShuffleNetV1Config((24, 240, 480, 960)),
    "shufflenet_v1_g3_x1_5": ShuffleNetV1Config((24, 360, 720, 1440)),
    "shufflenet_v1_g3_x2_0": ShuffleNetV1Config((48, 480, 960, 1920)),
}


def _create_shufflenetv1(name: str, **overrides) -> ShuffleNetV1:
    cfg = _CONFIGS[name]
    return ShuffleNetV1(cfg.stage_out_channels, cfg.stage_repeats, cfg.groups, **overrides)


_PAPER = ("Zhang et al., ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices, "
          "CVPR 2018")
# megvii's eval transform: bilinear 256 resize, 224 crop, BGR 0-255 without normalisation.
_MEGVII_EVAL = dict(family="shufflenetv1", paper=_PAPER, interpolation="bilinear", crop_pct=224 / 256,
                    channel_order="BGR", pixel_scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@register_model(**_MEGVII_EVAL, reference_params=717_324)
def shufflenet_v1_g3_x0_5(**overrides) -> ShuffleNetV1:
    return _create_shufflenetv1("shufflenet_v1_g3_x0_5", **overrides)


@register_model(**_MEGVII_EVAL, reference_params=1_864_728, aliases=("shufflenet_v1",))
def shufflenet_v1_g3_x1_0(**overrides) -> ShuffleNetV1:
    return _create_shufflenetv1("shufflenet_v1_g3_x1_0", **overrides)


@register_model(**_MEGVII_EVAL, reference_params=3_441_168)
def shufflenet_v1_g3_x1_5(**overrides) -> ShuffleNetV1:
    return _create_shufflenetv1("shufflenet_v1_g3_x1_5", **overrides)


@register_model(**_MEGVII_EVAL, reference_params=5_449_776)
def shufflenet_v1_g3_x2_0(**overrides) -> ShuffleNetV1:
    return _create_shufflenetv1("shufflenet_v1_g3_x2_0", **overrides)
