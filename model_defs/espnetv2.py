"""ESPNetv2.

Paper: "ESPNetv2: A Light-weight, Power Efficient, and General Purpose Convolutional Neural Network"
(Mehta, Rastegari, Shapiro and Hajishirzi, CVPR 2019).

The EESP unit replaces ESPNet's convs with cheaper ones: a group 1x1 conv (K = 4 groups) reduces to n =
out/K channels, K depthwise 3x3 convs at different dilations run on it side by side, their outputs are
fused hierarchically (each added to the previous sum) and concatenated, BN-PReLU, and a group 1x1 conv
(K groups) with BN mixes them back; a stride-1 unit adds its input and applies a PReLU. Each branch's
dilation comes from a receptive-field limit r_lim per level: branch i has a (3 + 2i)-wide field, or 3
(dilation 1) past the limit; sorted, the fields map to dilations {3: 1, 5: 2, 7: 3, 9: 4, 11: 5, 13: 6}.
The strided unit (every depthwise conv at stride 2) is half of a downsampler: beside it, a 3x3/2
average pool of the unit's input (its channels go first in the concat), the two concatenated to the
level's width; the image, average-pooled to the level's resolution, goes through a 3x3 conv-BN-PReLU and
a 1x1 conv-BN to that width and is added (input reinforcement, levels 2 to 4), then a PReLU. Level 1 is
a 3x3/2 conv-BN-PReLU; levels 3, 4 and 5 add 3, 7 and 3 stride-1 units after their downsampler. The head
is a depthwise 3x3 conv-BN-PReLU and a group (K) 1x1 conv-BN-PReLU to the last width, a global average
pool, dropout 0.2 (the identity at eval) and a Linear.

Neither timm nor torchvision defines it. The architecture follows the authors' code: sacmehta/EdgeNets
``model/classification/espnetv2.py``, ``espnetv2_config.py`` and ``nn_layers/eesp.py`` (sacmehta/ESPNetv2
``imagenet/Model.py`` is the same network): widths per scale s (``sc_ch_dict``), K = 4, r_lim
(13, 11, 9, 7, 5). The authors' code assigns r_lim[i] to level i + 2's downsampler and r_lim[i + 1] to its
stride-1 units, so the dilations are (1, 2, 3, 4) from level 2 to level 4's downsampler, (1, 1, 2, 3) for
level 4's units and level 5's downsampler, (1, 1, 1, 2) for level 5's units; this follows that code, not
a reading of the paper. Module names are theirs (``level2_0.eesp.spp_dw.3.conv``, ``level4.6.conv_1x1_exp.bn``,
``level3_0.inp_reinf.1.conv``, ``level5.4.act``), so their checkpoints load strictly without a remap, and
the parameter counts are theirs: 1,241,332 / 1,670,072 / 1,965,440 / 2,314,856 / 3,498,136 at s = 0.5 /
1.0 / 1.25 / 1.5 / 2.0 (../shared/families.md). Those counts hold two sets of tensors the authors build
and their forward never runs, kept here as state so checkpoints and counts match: the PReLU of each
strided unit (the downsampler applies its own after the sum) and level 5's input-reinforcement convs
(level 5 is not reinforced: the authors never pass it the image). Neither appears in the ONNX graph.

Export notes (../shared/families.md, ESPNetv2 row):
- Input reinforcement: the authors pool the full image again at every level, ``while True`` until its
  ``size(2)`` (the height) equals the features' (``F.avg_pool2d(k=3, s=2, p=1)``), which traces into a
  chain unrolled for the traced size. Here the image is pooled once per level down one chain (1/2, 1/4, 1/8, 1/16), the
  same values, with a fixed count of AveragePool nodes and no size read at all. Every downsampling
  layer (3x3/2 convs and pools, padding 1 or the dilation) gives ceil(n / 2) rows, so the chain matches
  the features at any side, odd ones included (``size_divisor=1``). From 9 px on, the authors' loop
  pools as often as the chain; below, the image reaches 1x1 before level 4 and their loop stops early
  (``min_size=9``).
- The authors' residual test ``if expanded.size() == input.size()`` is a Python branch that tracing
  bakes; it holds for exactly the stride-1 units (their input and output widths are equal), so here the
  residual is decided once, by the stride, at construction.
- EESP's group 1x1 convs are ONNX Conv with group=4; the depthwise dilated convs Conv with group=C.
  The strided unit's shortcut is an AveragePool (count_include_pad, PyTorch's default), concatenated.
- PReLU has one slope per channel (ONNX PRelu). The head pools globally (GlobalAveragePool), so
  P-ADAPT does not arise.

Preprocessing is the authors' eval transform (``imagenet.py``: resize 224 / 0.875, center crop 224,
ImageNet mean/std), the spec's default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import ConvNormAct, ConvNormPReLU, NormPReLU, global_avg_pool, named_conv
from ._registry import register_model

# Receptive field (kernel extent) of a 3x3 conv -> its dilation.
_DILATION_OF_FIELD = {3: 1, 5: 2, 7: 3, 9: 4, 11: 5, 13: 6, 15: 7, 17: 8}


def _eesp_dilations(branches: int, r_lim: int) -> list[int]:
    """Branch i's field is 3 + 2i, or 3 past ``r_lim``; sorted so the repeated 3s come first, where the
    hierarchical sums do not mix them with the wide fields."""
    fields = sorted(3 + 2 * i if 3 + 2 * i <= r_lim else 3 for i in range(branches))
    return [_DILATION_OF_FIELD[field] for field in fields]


class EESP(nn.Module):
    """Extremely Efficient Spatial Pyramid unit: group 1x1 reduce -> depthwise dilated 3x3 branches ->
    hierarchical sums -> concat, BN-PReLU -> group 1x1 conv-BN. At stride 1 the input is added and a
    PReLU applied; at stride 2 the result goes to the downsampler unactivated."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, branches: int, r_lim: int):
        super().__init__()
        if out_chs % branches:
            raise ValueError(f"EESP width {out_chs} does not split into {branches} equal branches")
        n = out_chs // branches
        self.stride = stride
        self.proj_1x1 = ConvNormPReLU(in_chs, n, 1, groups=branches)
        self.spp_dw = nn.ModuleList(named_conv(n, n, 3, stride, dilation=d, groups=n)
                                    for d in _eesp_dilations(branches, r_lim))
        self.conv_1x1_exp = ConvNormAct(out_chs, out_chs, 1, groups=branches, act_layer=None)
        self.br_after_cat = NormPReLU(out_chs)
        # In the strided unit, state the authors build but never run (see the module docstring).
        self.module_act = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        merged = [self.spp_dw[0](reduced)]
        for branch in self.spp_dw[1:]:
            merged.append(branch(reduced) + merged[-1])
        out = self.conv_1x1_exp(self.br_after_cat(torch.cat(merged, 1)))
        if self.stride == 2:
            return out
        return self.module_act(out + x)


class DownSampler(nn.Module):
    """Halves the resolution: a 3x3/2 average pool of the input beside a strided EESP to the remaining
    channels, concatenated, plus the image at this resolution through conv-BN-PReLU and conv-BN where
    one is given, then a PReLU."""

    def __init__(self, in_chs: int, out_chs: int, branches: int, r_lim: int, image_chs: int):
        super().__init__()
        self.eesp = EESP(in_chs, out_chs - in_chs, 2, branches, r_lim)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1)
        self.inp_reinf = nn.Sequential(ConvNormPReLU(image_chs, image_chs, 3),
                                       ConvNormAct(image_chs, out_chs, 1, act_layer=None))
        self.act = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.cat([self.avg(x), self.eesp(x)], 1)
        if image is not None:
            out = out + self.inp_reinf(image)
        return self.act(out)


def _eesp_units(chs: int, depth: int, branches: int, r_lim: int) -> nn.Sequential:
    return nn.Sequential(*(EESP(chs, chs, 1, branches, r_lim) for _ in range(depth)))


class EESPNet(nn.Module):
    """ESPNetv2 for classification, with the authors' module names."""

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, int, int], r_lim: tuple[int, ...],
                 branches: int, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        w, k = widths, branches
        self.level1 = ConvNormPReLU(in_chans, w[0], 3, stride=2)
        self.image_pool = nn.AvgPool2d(3, stride=2, padding=1)  # one chain for every level's image
        self.level2_0 = DownSampler(w[0], w[1], k, r_lim[0], in_chans)
        self.level3_0 = DownSampler(w[1], w[2], k, r_lim[1], in_chans)
        self.level3 = _eesp_units(w[2], depths[0], k, r_lim[2])
        self.level4_0 = DownSampler(w[2], w[3], k, r_lim[2], in_chans)
        self.level4 = _eesp_units(w[3], depths[1], k, r_lim[3])
        self.level5_0 = DownSampler(w[3], w[4], k, r_lim[3], in_chans)
        self.level5 = _eesp_units(w[4], depths[2], k, r_lim[4])
        # The head widens before the pool: depthwise 3x3, then a group 1x1 to the last width.
        self.level5.append(ConvNormPReLU(w[4], w[4], 3, groups=w[4]))
        self.level5.append(ConvNormPReLU(w[4], w[5], 1, groups=k))
        self.num_features = w[5]
        self.classifier = nn.Linear(w[5], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors': convs Kaiming-normal (fan-out), the Linear normal with std 0.001, zero biases;
        BatchNorm's and PReLU's own defaults (1, 0 and a 0.25 slope) are theirs too."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        image = self.image_pool(self.image_pool(x))  # the image at 1/4, level 2's resolution
        x = self.level2_0(self.level1(x), image)
        image = self.image_pool(image)
        x = self.level3(self.level3_0(x, image))
        image = self.image_pool(image)
        x = self.level4(self.level4_0(x, image))
        return self.level5(self.level5_0(x))  # level 5 is not reinforced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_avg_pool(self.forward_features(x)).flatten(1))


@dataclass(frozen=True)
class ESPNetV2Config:
    widths: tuple[int, int, int, int, int, int]  # level 1 ... level 5, then the head
    depths: tuple[int, int, int] = (3, 7, 3)  # stride-1 EESP units at levels 3-5 (level 2 has none)
    r_lim: tuple[int, int, int, int, int] = (13, 11, 9, 7, 5)  # receptive-field limits
    branches: int = 4  # K: EESP's parallel branches and its 1x1 convs' groups


# The authors' sc_ch_dict, by scale s.
_CONFIGS = {
    "espnetv2_s050": ESPNetV2Config(widths=(16, 32, 64, 128, 256, 1024)),
    "espnetv2_s100": ESPNetV2Config(widths=(32, 64, 128, 256, 512, 1024)),
    "espnetv2_s125": ESPNetV2Config(widths=(32, 80, 160, 320, 640, 1024)),
    "espnetv2_s150": ESPNetV2Config(widths=(32, 96, 192, 384, 768, 1024)),
    "espnetv2_s200": ESPNetV2Config(widths=(32, 128, 256, 512, 1024, 1280)),
}


def _create_espnetv2(name: str, **overrides) -> EESPNet:
    cfg = _CONFIGS[name]
    return EESPNet(cfg.widths, cfg.depths, cfg.r_lim, cfg.branches, **overrides)


_PAPER = ("Mehta, Rastegari, Shapiro and Hajishirzi, ESPNetv2: A Light-weight, Power Efficient, and General "
          "Purpose Convolutional Neural Network, CVPR 2019")
# The authors' eval transform (224 / 0.875 resize, 224 crop, ImageNet mean/std) is the spec's default.
_SPEC = dict(family="espnetv2", paper=_PAPER, size_divisor=1, min_size=9)


@register_model(reference_params=1_241_332, **_SPEC)
def espnetv2_s050(**overrides) -> EESPNet:
    return _create_espnetv2("espnetv2_s050", **overrides)


@register_model(reference_params=1_670_072, **_SPEC)
def espnetv2_s100(**overrides) -> EESPNet:
    return _create_espnetv2("espnetv2_s100", **overrides)


@register_model(reference_params=1_965_440, **_SPEC)
def espnetv2_s125(**overrides) -> EESPNet:
    return _create_espnetv2("espnetv2_s125", **overrides)


@register_model(reference_params=2_314_856, **_SPEC)
def espnetv2_s150(**overrides) -> EESPNet:
    return _create_espnetv2("espnetv2_s150", **overrides)


@register_model(reference_params=3_498_136, **_SPEC)
def espnetv2_s200(**overrides) -> EESPNet:
    return _create_espnetv2("espnetv2_s200", **overrides)
