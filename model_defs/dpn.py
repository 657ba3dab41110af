"""Dual Path Networks: DPN-68, DPN-68b, DPN-92, DPN-98, DPN-107, DPN-131.

Paper: "Dual Path Networks" (Chen et al., NeurIPS 2017); the authors' MXNet symbols and weights in
cypw/DPNs, which timm's ``dpn.py`` and Cadene's ``pretrainedmodels`` port.

A dual path block is a ResNeXt bottleneck (pre-activation BN-ReLU -> 1x1 -> grouped 3x3 -> 1x1) whose
output is split in two: its first ``res_chs`` channels are added to the residual path (ResNet), the
remaining ``inc`` are appended to the dense path (DenseNet). Both paths travel between blocks as one
tensor, residual channels first, as timm carries them. The first block of a stage projects its input
with a 1x1 BN-ReLU-conv (stride 2 from the second stage on) to ``res_chs`` residual channels and a
dense path of ``2 * inc``; every later block widens the dense path by ``inc``. The stem is conv-BN-ReLU
(7x7, or 3x3 in DPN-68) and a 3x3/2 max pool; the head is BN-ReLU, a global average pool and the
classifier as a 1x1 conv with a bias.

Module names are timm's (``features.conv1_1``, ``features.conv<stage>_<block>.c1x1_w_s1`` / ``c1x1_w_s2``
(the projection, named by its stride), ``c1x1_a``, ``c3x3_b``, ``c1x1_c`` [``c1x1_c1``, ``c1x1_c2``],
``features.conv5_bn_ac``, ``classifier``), so its state_dicts load as they are. Cadene's
``pretrainedmodels.dpn*`` has the same keys but names the classifier ``last_linear`` (:func:`remap_cadene`).

Export notes (../shared/families.md, DPN rows):
- Dual-path split/concat by channel slicing: the channel counts of every split are fixed when the
  block is built, so each split is one ONNX ``Split`` along the channels with a constant ``split``
  input, and each block ends in one three-input ``Concat`` (residual sum, old dense path, new dense
  channels). The batch axis is never read: no Shape node, and the batch stays dynamic.
- Pre-activation BN-ReLU: the BN that opens each block (and its projection's) reads the previous
  block's Concat, not a conv, so it cannot fold into a conv at export and stays a BatchNormalization
  node; the BNs inside the bottleneck follow a conv and fold. The block input feeds two different
  BN-ReLUs where the block projects (``c1x1_w_*`` and ``c1x1_a``).
- DPN-68b ("b", cypw's ``symbol_dpn_b``) replaces the last 1x1 conv and its channel split by BN-ReLU and
  two 1x1 convs (``c1x1_c1`` to the residual channels, ``c1x1_c2`` to the dense ones): the same
  parameter count as DPN-68 and the same function class, with one Split per block fewer. timm's default
  weights for it are its own ``.ra_in1k`` (ImageNet mean/std, crop 0.95), not the MXNet ones.
- Input sizes: every stride-2 layer (7x7 or 3x3 pad k//2, the 3x3/2 max pool with pad 1, the 3x3 with
  pad 1, the unpadded 1x1 projection) maps a side n to ceil(n / 2), so the two paths line up at any
  size, odd sides included (size_divisor=1), and the head pools globally (P-ADAPT does not apply).
- BN eps is 1e-3 throughout (MXNet's default, kept by both ports).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, ConvNormAct, global_avg_pool
from ._registry import StateDict, register_model

BN_EPS = 1e-3  # MXNet's BatchNorm default, which the converted weights were trained with
# cypw/DPNs normalizes 0-255 pixels as (x - [124, 117, 104]) * 0.0167; on 0-1 pixels that is timm's
# IMAGENET_DPN_MEAN / IMAGENET_DPN_STD.
DPN_MEAN = (124 / 255, 117 / 255, 104 / 255)
DPN_STD = (1 / (0.0167 * 255),) * 3


class BnAct(nn.Module):
    """BN -> ReLU, under timm's ``bn`` name (a module of its own, so the key is ``<name>.bn.*``)."""

    def __init__(self, chs: int):
        super().__init__()
        self.bn = BatchNormAct2d(chs, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class BnActConv2d(nn.Module):
    """Pre-activation BN -> ReLU -> conv (no bias, padding ``kernel_size // 2``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.bn = BatchNormAct2d(in_chs, eps=BN_EPS)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


class DualPathBlock(nn.Module):
    """One dual path block on the concatenated (residual | dense) tensor of ``in_chs`` channels.

    ``project`` (the first block of a stage) passes the input through a 1x1 BN-ReLU-conv to
    ``res_chs + 2 * inc`` channels before splitting it, with ``stride``; otherwise the input is the
    shortcut as it is. ``separate_outputs`` is DPN-b's pair of 1x1 convs in place of one conv and a split.
    """

    def __init__(self, in_chs: int, mid_chs: int, res_chs: int, inc: int, groups: int, stride: int = 1,
                 project: bool = False, separate_outputs: bool = False):
        super().__init__()
        shortcut_chs = res_chs + 2 * inc if project else in_chs
        self.shortcut_split = (res_chs, shortcut_chs - res_chs)
        self.out_split = (res_chs, inc)
        self.out_chs = shortcut_chs + inc
        projection = BnActConv2d(in_chs, shortcut_chs, 1, stride) if project else None
        # timm names the projection by its stride (the MXNet ``c1x1-w(s/1)`` / ``(s/2)``), for its keys.
        self.c1x1_w_s1 = projection if stride == 1 else None
        self.c1x1_w_s2 = projection if stride == 2 else None
        self.c1x1_a = BnActConv2d(in_chs, mid_chs, 1)
        self.c3x3_b = BnActConv2d(mid_chs, mid_chs, 3, stride, groups)
        if separate_outputs:
            self.c1x1_c = BnAct(mid_chs)
            self.c1x1_c1 = nn.Conv2d(mid_chs, res_chs, 1, bias=False)
            self.c1x1_c2 = nn.Conv2d(mid_chs, inc, 1, bias=False)
        else:
            self.c1x1_c = BnActConv2d(mid_chs, res_chs + inc, 1)
            self.c1x1_c1 = self.c1x1_c2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projection = self.c1x1_w_s1 if self.c1x1_w_s1 is not None else self.c1x1_w_s2
        shortcut = x if projection is None else projection(x)
        residual, dense = shortcut.split(self.shortcut_split, 1)
        out = self.c1x1_c(self.c3x3_b(self.c1x1_a(x)))
        if self.c1x1_c1 is None:
            new_residual, new_dense = out.split(self.out_split, 1)
        else:
            new_residual, new_dense = self.c1x1_c1(out), self.c1x1_c2(out)
        return torch.cat([residual + new_residual, dense, new_dense], 1)


@dataclass(frozen=True)
class DPNConfig:
    """One variant, in the terms of the paper's Table 1 (timm's argument names in brackets)."""

    stem_width: int  # [num_init_features]
    bottleneck_width: int  # grouped 3x3 width of the first stage, doubled per stage [k_r]
    groups: int  # of the 3x3 convs [groups] (G)
    depths: tuple[int, int, int, int]  # blocks per stage [k_sec]
    increments: tuple[int, int, int, int]  # dense channels each block adds, per stage [inc_sec] (k)
    small: bool = False  # DPN-68: a 3x3 stem and residual widths 64..512 instead of 256..2048
    separate_outputs: bool = False  # DPN-b [b]


class DPN(nn.Module):
    def __init__(self, cfg: DPNConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        layers = OrderedDict()
        layers["conv1_1"] = ConvNormAct(in_chans, cfg.stem_width, 3 if cfg.small else 7, 2, eps=BN_EPS)
        layers["conv1_pool"] = nn.MaxPool2d(3, 2, 1)
        chs = cfg.stem_width
        for stage, (depth, inc) in enumerate(zip(cfg.depths, cfg.increments, strict=True)):
            scale = 2 ** stage
            res_chs, mid_chs = (64 if cfg.small else 256) * scale, cfg.bottleneck_width * scale
            for j in range(depth):
                block = DualPathBlock(chs, mid_chs, res_chs, inc, cfg.groups, stride=2 if j == 0 and stage > 0 else 1,
                                      project=j == 0, separate_outputs=cfg.separate_outputs)
                layers[f"conv{stage + 2}_{j + 1}"] = block
                chs = block.out_chs
        # timm asks for an ELU here (``fc_act_layer='elu'``), but the norm layer it passes already binds ReLU,
        # which wins: timm's DPNs, cypw's MXNet symbols and Cadene's port all end in BN-ReLU.
        layers["conv5_bn_ac"] = BnAct(chs)
        self.features = nn.Sequential(layers)
        self.num_features = chs
        self.classifier = nn.Conv2d(chs, num_classes, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_avg_pool(self.forward_features(x))).flatten(1)


def remap_cadene(state: StateDict) -> dict[str, torch.Tensor]:
    """Cadene's ``pretrainedmodels.dpn*`` keys -> ours: only the classifier is renamed."""
    return {("classifier" + key[len("last_linear"):] if key.startswith("last_linear.") else key): value
            for key, value in state.items()}


_CONFIGS = {
    "dpn68": DPNConfig(10, 128, 32, (3, 4, 12, 3), (16, 32, 32, 64), small=True),
    "dpn68b": DPNConfig(10, 128, 32, (3, 4, 12, 3), (16, 32, 32, 64), small=True, separate_outputs=True),
    "dpn92": DPNConfig(64, 96, 32, (3, 4, 20, 3), (16, 32, 24, 128)),
    "dpn98": DPNConfig(96, 160, 40, (3, 6, 20, 3), (16, 32, 32, 128)),
    "dpn107": DPNConfig(128, 200, 50, (4, 8, 20, 3), (20, 64, 64, 128)),
    "dpn131": DPNConfig(128, 160, 40, (4, 8, 28, 3), (16, 32, 32, 128)),
}


def _create_dpn(name: str, **overrides) -> DPN:
    return DPN(_CONFIGS[name], **overrides)


_PAPER = "Chen et al., Dual Path Networks, NeurIPS 2017"
# Any side from min_size up works, odd ones included (every stride-2 layer maps n to ceil(n / 2), the
# head pools globally); below the total stride, 32, the last stage would compute mostly padding.
# INT8: the dual-path junctions. Each block's Concat output (the residual running sum beside fresh dense
# channels, under one per-tensor scale) is read by the next block's Split and pre-activation BN, and ONNX
# Runtime keeps a tensor quantized while any reader of it is; a quantized Add would quantize the running
# sum on its way in. Only with all four op types in float (matched as --exclude matches op types) does the
# residual path stay float through a stage. Random weights, held-out photos, cpu flavour, bias correction:
# dpn68 cosine 0.970 -> 0.984, dpn92 0.958 -> 0.977 (then searched); without Add, dpn68 0.979.
_FAMILY = dict(family="dpn", paper=_PAPER, interpolation="bicubic", size_divisor=1, min_size=32,
               remap=remap_cadene, int8_keep_float=("BatchNormalization", "Split", "Concat", "Add"))
# timm's pretrained cfgs for the MXNet weights (.mx_in1k): the authors' mean and scale, bicubic, crop 0.875.
_MXNET_EVAL = dict(**_FAMILY, mean=DPN_MEAN, std=DPN_STD, crop_pct=0.875)


@register_model(**_MXNET_EVAL, reference="timm:dpn68", reference_params=12_611_602)
def dpn68(**overrides) -> DPN:
    return _create_dpn("dpn68", **overrides)


# timm's default weights, .ra_in1k: ImageNet mean/std, crop 0.95 at the 224 training size (its top-1 of
# 79.342 is at its test_input_size, 288, crop 1.0); the MXNet .mx_in1k weights take _MXNET_EVAL.
@register_model(**_FAMILY, crop_pct=0.95, reference="timm:dpn68b", reference_params=12_611_602)
def dpn68b(**overrides) -> DPN:
    return _create_dpn("dpn68b", **overrides)


@register_model(**_MXNET_EVAL, reference="timm:dpn92", reference_params=37_668_392)
def dpn92(**overrides) -> DPN:
    return _create_dpn("dpn92", **overrides)


@register_model(**_MXNET_EVAL, reference="timm:dpn98", reference_params=61_570_728)
def dpn98(**overrides) -> DPN:
    return _create_dpn("dpn98", **overrides)


@register_model(**_MXNET_EVAL, reference="timm:dpn107", reference_params=86_917_800)
def dpn107(**overrides) -> DPN:
    return _create_dpn("dpn107", **overrides)


@register_model(**_MXNET_EVAL, reference="timm:dpn131", reference_params=79_254_504)
def dpn131(**overrides) -> DPN:
    return _create_dpn("dpn131", **overrides)
