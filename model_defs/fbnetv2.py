"""FBNetV2.

Paper: "FBNetV2: Differentiable Neural Architecture Search for Spatial and Channel Dimensions"
(Wan et al., CVPR 2020).

Searched MobileNetV3-style networks: MBConv blocks with fractional expansions, ReLU or Hardswish,
hard-sigmoid Squeeze-and-Excitation, identity/projection "skip" blocks, and MobileNetV3's "efficient
head" (1x1 expand, global pool, 1x1 conv, classifier). Neither timm nor torchvision defines FBNetV2:
the architectures are mobile-vision's ``FBNetV2_F1``..``F4``, ``L1``, ``L2``
(``mobile_cv/arch/fbnet_v2/fbnet_modeldef_cls_fbnetv2.py``), whose parameter counts the registry
checks exactly. The blocks are ``_efficientnet_blocks``' (timm names, the layout timm gives FBNet-C and
FBNetV3); :func:`remap_mobile_cv` converts mobile-vision's checkpoints (``backbone.stages.xif*``).

What mobile-vision does differently from timm's MBConv builder, and is reproduced here:
- channel widths round with its ``get_divisible_by`` (nearest multiple of 8, bumped up a step below
  95% of the target; timm bumps below 90%), for expanded widths and SE widths alike;
- the SE squeezes a quarter of the expanded width, uses the block's activation inside and a
  hard-sigmoid gate (P-HSWISH);
- the stem conv has a bias; "skip" projections use ReLU whatever the block's activation.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, replace

import torch
from torch import nn

from ._efficientnet_blocks import (
    BatchNormAct2d,
    BlockDef,
    BlockOptions,
    ConvBnAct,
    DepthwiseSeparableConv,
    InvertedResidual,
    decode_block,
)
from ._layers import SqueezeExcite
from ._registry import StateDict, register_model

_SKIP = re.compile(r"skip_c(\d+)")


def divisible_by(value: float, divisor: int = 8) -> int:
    """mobile-vision's ``get_divisible_by``: the nearest multiple of ``divisor`` (halves round up), one
    step more where that falls below 95% of ``value``; at least ``divisor``. Checkpoints depend on it."""
    if value % divisor == 0:
        return max(int(value), divisor)
    rounded = max(1, int(value / divisor + 0.5)) * divisor
    if rounded < 0.95 * value:
        rounded += divisor
    return max(rounded, divisor)


def decode_stage(stage: tuple[str, ...]) -> list[BlockDef]:
    """Block strings (``_efficientnet_blocks`` notation) or ``skip_c<channels>`` -> one BlockDef per
    block; repeats expanded, only the stage's first block strided."""
    blocks = []
    for text in stage:
        if match := _SKIP.fullmatch(text):
            block = BlockDef(kind="skip", repeats=1, kernel=1, stride=1, out_chs=int(match.group(1)))
        elif text.startswith("skip"):
            raise ValueError(f"block string {text!r}: a skip block is written skip_c<channels>")
        else:
            block = decode_block(text)
        blocks += [block] * block.repeats
    return [blocks[0], *(replace(b, stride=1) for b in blocks[1:])]


def _build_block(block: BlockDef, in_chs: int) -> nn.Module:
    act = block.act or nn.ReLU
    if block.kind == "skip":
        if in_chs == block.out_chs and block.stride == 1:
            return nn.Identity()
        return ConvBnAct(in_chs, block.out_chs, 1, block.stride, BlockOptions(nn.ReLU))
    opts = BlockOptions(act)
    mid_chs = divisible_by(in_chs * block.expansion)
    if block.kind == "ds":
        built = DepthwiseSeparableConv(in_chs, block.out_chs, block.kernel, block.stride, opts)
    elif block.kind == "ir":
        if mid_chs == in_chs:
            raise ValueError(f"an ir block of {in_chs} channels at e{block.expansion} has no expansion: write ds")
        # InvertedResidual rounds in_chs * expansion with timm's rule; the exact ratio of the width
        # mobile-vision rounds to is already a multiple of 8, which that rule leaves alone.
        built = InvertedResidual(in_chs, block.out_chs, block.kernel, block.stride, opts, mid_chs / in_chs)
    else:
        raise ValueError(f"FBNetV2 has no {block.kind!r} blocks (expected ds, ir or skip)")
    if block.se_ratio:
        built.se = SqueezeExcite(mid_chs, divisible_by(int(mid_chs * block.se_ratio)), act, nn.Hardsigmoid)
    return built


class FBNetV2(nn.Module):
    """conv_stem -> bn1 -> blocks (the last stage is the head's 1x1 expand) -> global_pool ->
    conv_head -> act2 -> classifier."""

    def __init__(self, stages: list[list[BlockDef]], stem_size: int, num_features: int, head_expansion: float = 6.0,
                 num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv_stem = nn.Conv2d(in_chans, stem_size, 3, 2, 1)
        self.bn1 = BatchNormAct2d(stem_size, act_layer=nn.Hardswish)
        in_chs, built_stages = stem_size, []
        for stage in stages:
            built = []
            for block in stage:
                built.append(_build_block(block, in_chs))
                in_chs = block.out_chs
            built_stages.append(nn.Sequential(*built))
        # mobile-vision's "ir_pool_hs" head: expand, pool, then a 1x1 conv without bias or BN.
        head_chs = divisible_by(in_chs * head_expansion)
        built_stages.append(nn.Sequential(ConvBnAct(in_chs, head_chs, 1, 1, BlockOptions(nn.Hardswish))))
        self.blocks = nn.Sequential(*built_stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(head_chs, num_features, 1, bias=False)
        self.act2 = nn.Hardswish()
        self.flatten = nn.Flatten(1)
        self.num_features = num_features
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv_head(self.global_pool(self.forward_features(x))))
        return self.classifier(self.flatten(x))


# Prefix renames per mobile-vision block kind (told apart by the sublayers a block has).
_MOBILE_CV_STEM = {"conv.": "conv_stem.", "bn.": "bn1."}
_MOBILE_CV_BLOCKS = {
    frozenset({"pw", "dw", "pwl"}): {"pw.conv.": "conv_pw.", "pw.bn.": "bn1.", "dw.conv.": "conv_dw.",
                                     "dw.bn.": "bn2.", "pwl.conv.": "conv_pwl.", "pwl.bn.": "bn3."},
    frozenset({"dw", "pwl"}): {"dw.conv.": "conv_dw.", "dw.bn.": "bn1.", "pwl.conv.": "conv_pw.", "pwl.bn.": "bn2."},
    frozenset({"conv"}): {"conv.conv.": "conv.", "conv.bn.": "bn1."},  # skip projection
}
_MOBILE_CV_SE = {"se.se.0.conv.": "se.conv_reduce.", "se.se.1.": "se.conv_expand."}
_MOBILE_CV_POOL_HEAD = {"pw.conv.": "conv.", "pw.bn.": "bn1."}


def _renamed(tail: str, renames: dict[str, str], key: str) -> str:
    for old, new in renames.items():
        if tail.startswith(old):
            return new + tail[len(old):]
    raise KeyError(key)


def remap_mobile_cv(state: StateDict) -> dict[str, torch.Tensor]:
    """mobile-vision ``FBNet`` checkpoints (``backbone.stages.xif<stage>_<block>.*``, ``head.conv``)
    -> our keys. Stage 0 is the stem, the last stage the ``ir_pool`` head."""
    sublayers: dict[str, set[str]] = defaultdict(set)
    for key in state:
        if key.startswith("backbone.stages."):
            block, sublayer = key.split(".")[2:4]
            sublayers[block].add(sublayer)
    last_stage = max(int(block[3:].split("_")[0]) for block in sublayers)
    remapped = {}
    for key, value in state.items():
        if key.startswith("head.conv."):  # 1x1 conv classifier -> Linear
            remapped["classifier." + key.rsplit(".", 1)[1]] = value.flatten(1) if value.ndim == 4 else value
            continue
        if not key.startswith("backbone.stages.xif"):
            raise KeyError(key)
        block, tail = key.split(".", 3)[2:]
        stage, index = (int(part) for part in block[3:].split("_"))
        if stage == 0:
            remapped[_renamed(tail, _MOBILE_CV_STEM, key)] = value
        elif stage == last_stage:
            if tail.startswith("pwl.conv."):
                remapped["conv_head." + tail[len("pwl.conv."):]] = value
            else:
                remapped[f"blocks.{stage - 1}.{index}." + _renamed(tail, _MOBILE_CV_POOL_HEAD, key)] = value
        else:
            renames = _MOBILE_CV_BLOCKS.get(frozenset(sublayers[block] - {"se", "res_conn"}))
            if renames is None:
                raise KeyError(key)
            remapped[f"blocks.{stage - 1}.{index}." + _renamed(tail, {**renames, **_MOBILE_CV_SE}, key)] = value
    return remapped


@dataclass(frozen=True)
class FBNetV2Config:
    stem_size: int
    stages: tuple[tuple[str, ...], ...]
    num_features: int


# Block strings: <type>_r<repeats>_k<kernel>_s<stride>[_e<expansion>]_c<channels>[_se0.25][_nhs]
# (see _efficientnet_blocks); ds = mobile-vision's e1 "ir" (no 1x1 expand), ReLU unless _nhs
# (Hardswish), _se0.25 = "sehsig". skip_c<channels>: identity, or a 1x1 conv-BN-ReLU projection
# where the width changes. The strides and expansions are mobile-vision's, stage by stage.
_FBNETV2_F = (
    ("ds_r1_k5_s1_c8",),
    ("ir_r1_k5_s2_e5.4566_c24", "ir_r1_k5_s1_e4.7912_c24"),
    ("ir_r1_k5_s2_e5.3501_c32_se0.25", "ir_r1_k5_s1_e4.5379_c24_se0.25"),
    ("ir_r1_k5_s2_e5.7133_c56_nhs", "ir_r1_k3_s1_e4.1212_c56_nhs", "ir_r1_k3_s1_e5.1246_c56_se0.25_nhs", "skip_c80",
     "ir_r1_k5_s1_e4.5070_c80_se0.25_nhs", "ir_r1_k5_s1_e1.7712_c80_se0.25_nhs"),
    ("ir_r1_k3_s2_e4.5685_c144_se0.25_nhs", "ir_r1_k5_s1_e5.84_c144_se0.25_nhs",
     "ir_r1_k5_s1_e6.8754_c144_se0.25_nhs", "skip_c224"),
)
_FBNETV2_F4 = (
    ("ds_r1_k3_s1_c16_nhs",),
    ("ir_r1_k5_s2_e5.4566_c24_nhs", "ir_r2_k5_s1_e1.7912_c24_nhs"),
    ("ir_r1_k5_s2_e5.3501_c32_se0.25", "ir_r1_k5_s1_e3.5379_c32_se0.25", "ir_r2_k5_s1_e4.5379_c32_se0.25"),
    ("ir_r1_k5_s2_e5.7133_c64_nhs", "ir_r1_k3_s1_e2.1212_c64_nhs", "skip_c64", "ir_r1_k3_s1_e5.0333_c104_nhs",
     "ir_r1_k5_s1_e2.507_c104_se0.25_nhs", "ir_r1_k5_s1_e1.7712_c104_se0.25_nhs",
     "ir_r1_k5_s1_e3.7712_c112_se0.25_nhs"),
    ("ir_r1_k3_s2_e5.5685_c184_se0.25_nhs", "ir_r1_k5_s1_e2.84_c184_se0.25_nhs",
     "ir_r1_k5_s1_e4.8754_c184_se0.25_nhs", "skip_c224"),
)
_FBNETV2_L = (
    ("ds_r1_k3_s1_c16_nhs",),
    ("ir_r1_k5_s2_e5.4566_c24_nhs", "ir_r1_k5_s1_e1.7912_c24_nhs", "ir_r1_k3_s1_e1.7912_c24_nhs",
     "ir_r1_k5_s1_e1.7912_c24_nhs"),
    ("ir_r1_k5_s2_e5.3501_c40_se0.25_nhs", "ir_r1_k5_s1_e3.5379_c32_se0.25_nhs", "ir_r2_k5_s1_e4.5379_c32_se0.25_nhs"),
    ("ir_r1_k5_s2_e5.7133_c64_nhs", "ir_r1_k3_s1_e2.1212_c64_nhs", "skip_c64", "ir_r1_k3_s1_e3.1246_c64_nhs",
     "ir_r1_k3_s1_e5.0333_c112_nhs", "ir_r1_k5_s1_e2.507_c112_se0.25_nhs", "ir_r1_k5_s1_e1.7712_c112_se0.25_nhs",
     "ir_r1_k5_s1_e2.7712_c112_se0.25_nhs", "ir_r2_k5_s1_e3.7712_c112_se0.25_nhs"),
    ("ir_r1_k3_s2_e5.5685_c184_se0.25_nhs", "ir_r2_k5_s1_e2.84_c184_se0.25_nhs", "ir_r2_k5_s1_e4.8754_c184_se0.25_nhs",
     "skip_c224"),
)

# F1 and F2 are one network at two resolutions, as are L1 and L2.
_CONFIGS = {
    "fbnetv2_f1": FBNetV2Config(8, _FBNETV2_F, 1600),
    "fbnetv2_f2": FBNetV2Config(8, _FBNETV2_F, 1600),
    "fbnetv2_f3": FBNetV2Config(8, _FBNETV2_F, 1984),
    "fbnetv2_f4": FBNetV2Config(16, _FBNETV2_F4, 1984),
    "fbnetv2_l1": FBNetV2Config(16, _FBNETV2_L, 1984),
    "fbnetv2_l2": FBNetV2Config(16, _FBNETV2_L, 1984),
}


def _create_fbnetv2(name: str, **overrides) -> FBNetV2:
    cfg = _CONFIGS[name]
    return FBNetV2([decode_stage(stage) for stage in cfg.stages], cfg.stem_size, cfg.num_features, **overrides)


_FBNETV2 = ("Wan et al., FBNetV2: Differentiable Neural Architecture Search for Spatial and Channel Dimensions, "
            "CVPR 2020")
# Input sizes and eval resize (crop_pct = size / resize) from mobile-vision's model_info_fbnet_v2.json;
# its eval transform is torchvision's Resize (bilinear), CenterCrop and the ImageNet mean/std.


@register_model(family="fbnetv2", paper=_FBNETV2, input_size=(3, 128, 128), crop_pct=128 / 151,
                reference_params=6_024_744, remap=remap_mobile_cv)
def fbnetv2_f1(**overrides) -> FBNetV2:
    return _create_fbnetv2("fbnetv2_f1", **overrides)


@register_model(family="fbnetv2", paper=_FBNETV2, input_size=(3, 160, 160), crop_pct=160 / 179,
                reference_params=6_024_744, remap=remap_mobile_cv)
def fbnetv2_f2(**overrides) -> FBNetV2:
    return _create_fbnetv2("fbnetv2_f2", **overrides)


@register_model(family="fbnetv2", paper=_FBNETV2, input_size=(3, 192, 192), crop_pct=192 / 208,
                reference_params=6_924_840, remap=remap_mobile_cv)
def fbnetv2_f3(**overrides) -> FBNetV2:
    return _create_fbnetv2("fbnetv2_f3", **overrides)


@register_model(family="fbnetv2", paper=_FBNETV2, crop_pct=224 / 251, reference_params=7_022_880,
                remap=remap_mobile_cv)
def fbnetv2_f4(**overrides) -> FBNetV2:
    return _create_fbnetv2("fbnetv2_f4", **overrides)


@register_model(family="fbnetv2", paper=_FBNETV2, crop_pct=224 / 256, reference_params=8_538_792,
                remap=remap_mobile_cv)
def fbnetv2_l1(**overrides) -> FBNetV2:
    return _create_fbnetv2("fbnetv2_l1", **overrides)


@register_model(family="fbnetv2", paper=_FBNETV2, input_size=(3, 256, 256), crop_pct=256 / 287,
                reference_params=8_538_792, remap=remap_mobile_cv)
def fbnetv2_l2(**overrides) -> FBNetV2:
    return _create_fbnetv2("fbnetv2_l2", **overrides)
