"""MobileNetV3.

Paper: "Searching for MobileNetV3" (Howard et al., ICCV 2019).

MBConv blocks from ``_efficientnet_blocks`` (timm's block strings and module names), with what
MobileNetV3 changes: Hardswish in the later stages and the stem, ReLU in the early ones (``_nre``),
a Squeeze-and-Excitation whose width is a quarter of the expanded width rounded to a multiple of 8,
with a ReLU inside and a hard-sigmoid gate, and the "efficient head": global pool first, then a 1x1
conv with bias (no BN) and Hardswish before the classifier. Keys are timm's ``mobilenetv3_*``;
:func:`remap_torchvision_mobilenetv3` converts torchvision's ``mobilenet_v3_*`` checkpoints.

Export: one HardSwish op needs opset >= 14 (P-HSWISH); at 13 the exporter decomposes it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from ._efficientnet_blocks import BatchNormAct2d, BlockDef, BlockOptions, build_block, decode_arch
from ._layers import SqueezeExcite, make_divisible
from ._registry import StateDict, register_model

SELayer = Callable[[int, BlockDef, type[nn.Module]], nn.Module]


def mobilenetv3_se(channels: int, block: BlockDef, act_layer: type[nn.Module]) -> nn.Module:
    """MobileNetV3's SE: a quarter of the expanded width rounded to a multiple of 8, with a ReLU inside
    whatever the block's activation (``act_layer``) and a hard-sigmoid gate."""
    return SqueezeExcite(channels, make_divisible(channels * block.se_ratio, 8), nn.ReLU, nn.Hardsigmoid)


def _build_mnv3_block(block: BlockDef, in_chs: int, out_chs: int, opts: BlockOptions,
                      se_layer: SELayer) -> nn.Module:
    """An MBConv block whose SE, where it has one, is ``se_layer(expanded width, block, block activation)``
    (``build_block``'s EfficientNet SE squeezes the block input with the block's activation and a
    sigmoid gate)."""
    built = build_block(block, in_chs, out_chs, opts)
    if block.se_ratio:
        built.se = se_layer(built.conv_dw.out_channels, block, block.act or opts.act_layer)
    return built


class MobileNetV3(nn.Module):
    """conv_stem -> bn1 -> blocks -> global_pool -> conv_head -> act2 -> classifier.

    Hardswish wherever a block string does not ask for another activation. ``stem_size``,
    ``stem_bias``, ``head_bias`` and ``se_layer`` are what FBNetV3 (``fbnetv3.py``) changes; timm
    builds both with one class, and the same keys follow.
    """

    def __init__(self, stages: list[list[BlockDef]], num_features: int, *, stem_size: int = 16,
                 stem_bias: bool = False, head_bias: bool = True, se_layer: SELayer = mobilenetv3_se,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.2):
        super().__init__()
        self.conv_stem = nn.Conv2d(in_chans, stem_size, 3, 2, 1, bias=stem_bias)
        self.bn1 = BatchNormAct2d(stem_size, act_layer=nn.Hardswish)
        opts = BlockOptions(act_layer=nn.Hardswish)
        in_chs, built_stages = stem_size, []
        for stage in stages:
            built = []
            for block in stage:
                out_chs = make_divisible(block.out_chs)
                built.append(_build_mnv3_block(block, in_chs, out_chs, opts, se_layer))
                in_chs = out_chs
            built_stages.append(nn.Sequential(*built))
        self.blocks = nn.Sequential(*built_stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(in_chs, num_features, 1, bias=head_bias)
        self.act2 = nn.Hardswish()
        self.flatten = nn.Flatten(1)
        self.drop_rate = drop_rate
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.act2(self.conv_head(self.global_pool(self.forward_features(x)))))
        return self.classifier(F.dropout(x, self.drop_rate, self.training))


# timm's block strings (see ``_efficientnet_blocks``); ``_nre`` marks the ReLU blocks, the rest use
# the model's Hardswish. One list per stage; the last stage is the 1x1 conv before pooling.
_ARCHS = {
    "mobilenetv3_large_100": [
        ["ds_r1_k3_s1_e1_c16_nre"],
        ["ir_r1_k3_s2_e4_c24_nre", "ir_r1_k3_s1_e3_c24_nre"],
        ["ir_r3_k5_s2_e3_c40_se0.25_nre"],
        ["ir_r1_k3_s2_e6_c80", "ir_r1_k3_s1_e2.5_c80", "ir_r2_k3_s1_e2.3_c80"],
        ["ir_r2_k3_s1_e6_c112_se0.25"],
        ["ir_r3_k5_s2_e6_c160_se0.25"],
        ["cn_r1_k1_s1_c960"],
    ],
    "mobilenetv3_small_100": [
        ["ds_r1_k3_s2_e1_c16_se0.25_nre"],
        ["ir_r1_k3_s2_e4.5_c24_nre", "ir_r1_k3_s1_e3.67_c24_nre"],
        ["ir_r1_k5_s2_e4_c40_se0.25", "ir_r2_k5_s1_e6_c40_se0.25"],
        ["ir_r2_k5_s1_e3_c48_se0.25"],
        ["ir_r3_k5_s2_e6_c96_se0.25"],
        ["cn_r1_k1_s1_c576"],
    ],
}
_NUM_FEATURES = {"mobilenetv3_large_100": 1280, "mobilenetv3_small_100": 1024}


def _create_mobilenetv3(name: str, **overrides) -> MobileNetV3:
    return MobileNetV3(decode_arch(_ARCHS[name]), _NUM_FEATURES[name], **overrides)


# torchvision's BatchNorms use eps 1e-3, timm's (and ours) 1e-5: adding the difference to the running
# variance makes var + eps the same number, so the converted model computes what torchvision's does.
_TV_BN_EPS, _BN_EPS = 1e-3, 1e-5
_TV_SE = {"fc1": "conv_reduce", "fc2": "conv_expand"}
_TV_DS_CONVS = (("conv_dw", "bn1"), ("conv_pw", "bn2"))
_TV_IR_CONVS = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))


def remap_torchvision_mobilenetv3(state: StateDict, name: str) -> dict[str, torch.Tensor]:
    """torchvision ``mobilenet_v3_*`` (``features.<i>.block.<j>``, ``classifier.0/3``) -> our keys.

    ``features.0`` is the stem, the last ``features`` entry the 1x1 conv of our last stage, and the
    ones between are the MBConv blocks in order. Inside a block the SE keeps its name and the
    conv-BN children map in order to a ds block's (dw, pw) or an ir block's (pw, dw, pwl).
    torchvision's head Linear(C, F) is our 1x1 ``conv_head``.
    """
    positions = [(stage, index) for stage, blocks in enumerate(decode_arch(_ARCHS[name]))
                 for index in range(len(blocks))]
    children: dict[int, set[int]] = {}
    se_children: set[tuple[int, int]] = set()
    for key in state:
        parts = key.split(".")
        if parts[0] == "features" and parts[2] == "block":
            children.setdefault(int(parts[1]), set()).add(int(parts[3]))
            if parts[4] in _TV_SE:
                se_children.add((int(parts[1]), int(parts[3])))
    child_names: dict[tuple[int, int], tuple[str, str]] = {}
    for feature, found in children.items():
        convs = [c for c in sorted(found) if (feature, c) not in se_children]
        names = _TV_DS_CONVS if len(convs) == 2 else _TV_IR_CONVS
        child_names.update({(feature, c): pair for c, pair in zip(convs, names, strict=True)})

    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[-1] == "running_var":
            value = value + (_TV_BN_EPS - _BN_EPS)
        if parts[0] == "classifier":  # Sequential(Linear, Hardswish, Dropout, Linear)
            if parts[1] == "0":
                remapped[f"conv_head.{parts[2]}"] = value[..., None, None] if parts[2] == "weight" else value
            else:
                remapped[f"classifier.{parts[2]}"] = value
            continue
        feature = int(parts[1])
        if feature == 0 or parts[2] != "block":  # Conv2dNormActivation: .0 conv, .1 BN
            stage, index = positions[-1]
            conv, bn = ("conv_stem", "bn1") if feature == 0 else (f"blocks.{stage}.{index}.conv",
                                                                  f"blocks.{stage}.{index}.bn1")
            remapped[".".join([conv if parts[2] == "0" else bn, *parts[3:]])] = value
            continue
        stage, index = positions[feature - 1]
        child, tail = int(parts[3]), parts[4:]
        if tail[0] in _TV_SE:
            local = ".".join(["se", _TV_SE[tail[0]], *tail[1:]])
        else:
            conv, bn = child_names[feature, child]
            local = ".".join([conv if tail[0] == "0" else bn, *tail[1:]])
        remapped[f"blocks.{stage}.{index}.{local}"] = value
    return remapped


_PAPER = "Howard et al., Searching for MobileNetV3, ICCV 2019"
# timm's pretrained cfg: bicubic resize, 0.875 center crop, ImageNet mean/std.
_TIMM_EVAL = dict(family="mobilenetv3", paper=_PAPER, interpolation="bicubic", crop_pct=0.875)


@register_model(**_TIMM_EVAL, reference="timm:mobilenetv3_large_100", reference_params=5_483_032,
                aliases=("mobilenet_v3_large",),
                remap=partial(remap_torchvision_mobilenetv3, name="mobilenetv3_large_100"))
def mobilenetv3_large_100(**overrides) -> MobileNetV3:
    return _create_mobilenetv3("mobilenetv3_large_100", **overrides)


@register_model(**_TIMM_EVAL, reference="timm:mobilenetv3_small_100", reference_params=2_542_856,
                aliases=("mobilenet_v3_small",),
                remap=partial(remap_torchvision_mobilenetv3, name="mobilenetv3_small_100"))
def mobilenetv3_small_100(**overrides) -> MobileNetV3:
    return _create_mobilenetv3("mobilenetv3_small_100", **overrides)
