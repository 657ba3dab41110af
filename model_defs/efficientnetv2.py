"""EfficientNetV2.

Paper: "EfficientNetV2: Smaller Models and Faster Training" (Tan & Le, ICML 2021).

Fused-MBConv (``er``: one kxk expansion conv) in the early, high-resolution stages and MBConv with SE
(``ir``) in the late ones, SiLU, BN eps 1e-3 (the TF default). Keys follow timm; torchvision's
``efficientnet_v2_*`` checkpoints load through :func:`remap_torchvision_mbconv`.

- S/M/L follow torchvision (symmetric padding, its ported weights); timm's ``efficientnetv2_s/m/l`` have
  the same keys and load directly (timm builds them with BN eps 1e-5, so outputs match only when timm
  is given ``bn_eps=1e-3``).
- B0-B3 exist only as timm's TF ports ``tf_efficientnetv2_b*``: TF "SAME" padding (P-SAME).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ._efficientnet_blocks import EfficientNet, decode_arch, remap_torchvision_mbconv, round_channels
from ._registry import INCEPTION_MEAN, INCEPTION_STD, register_model

# Block strings (legend in _efficientnet_blocks): the paper's Table 4 (S) and the official M/L configs.
_ARCH_S = (
    ("cn_r2_k3_s1_e1_c24_skip",),
    ("er_r4_k3_s2_e4_c48",),
    ("er_r4_k3_s2_e4_c64",),
    ("ir_r6_k3_s2_e4_c128_se0.25",),
    ("ir_r9_k3_s1_e6_c160_se0.25",),
    ("ir_r15_k3_s2_e6_c256_se0.25",),
)
_ARCH_M = (
    ("cn_r3_k3_s1_e1_c24_skip",),
    ("er_r5_k3_s2_e4_c48",),
    ("er_r5_k3_s2_e4_c80",),
    ("ir_r7_k3_s2_e4_c160_se0.25",),
    ("ir_r14_k3_s1_e6_c176_se0.25",),
    ("ir_r18_k3_s2_e6_c304_se0.25",),
    ("ir_r5_k3_s1_e6_c512_se0.25",),
)
_ARCH_L = (
    ("cn_r4_k3_s1_e1_c32_skip",),
    ("er_r7_k3_s2_e4_c64",),
    ("er_r7_k3_s2_e4_c96",),
    ("ir_r10_k3_s2_e4_c192_se0.25",),
    ("ir_r19_k3_s1_e6_c224_se0.25",),
    ("ir_r25_k3_s2_e6_c384_se0.25",),
    ("ir_r7_k3_s1_e6_c640_se0.25",),
)
# The B0 base that B1-B3 scale by width and depth.
_ARCH_BASE = (
    ("cn_r1_k3_s1_e1_c16_skip",),
    ("er_r2_k3_s2_e4_c32",),
    ("er_r2_k3_s2_e4_c48",),
    ("ir_r3_k3_s2_e4_c96_se0.25",),
    ("ir_r5_k3_s1_e6_c112_se0.25",),
    ("ir_r8_k3_s2_e6_c192_se0.25",),
)


@dataclass(frozen=True)
class EfficientNetV2Config:
    arch: tuple[tuple[str, ...], ...]
    stem_size: int
    width: float = 1.0
    depth: float = 1.0
    pad_same: bool = False
    # The B-series rounds scaled widths to the nearest multiple of 8 even when that loses >10%.
    round_limit: float = 0.9


_CONFIGS = {
    "efficientnetv2_s": EfficientNetV2Config(_ARCH_S, stem_size=24),
    "efficientnetv2_m": EfficientNetV2Config(_ARCH_M, stem_size=24),
    "efficientnetv2_l": EfficientNetV2Config(_ARCH_L, stem_size=32),
    "tf_efficientnetv2_b0": EfficientNetV2Config(_ARCH_BASE, 32, 1.0, 1.0, pad_same=True, round_limit=0.0),
    "tf_efficientnetv2_b1": EfficientNetV2Config(_ARCH_BASE, 32, 1.0, 1.1, pad_same=True, round_limit=0.0),
    "tf_efficientnetv2_b2": EfficientNetV2Config(_ARCH_BASE, 32, 1.1, 1.2, pad_same=True, round_limit=0.0),
    "tf_efficientnetv2_b3": EfficientNetV2Config(_ARCH_BASE, 32, 1.2, 1.4, pad_same=True, round_limit=0.0),
}


def _create_efficientnetv2(name: str, **overrides) -> EfficientNet:
    cfg = _CONFIGS[name]
    num_features = round_channels(1280, cfg.width, round_limit=cfg.round_limit)
    return EfficientNet(decode_arch(cfg.arch, cfg.depth), stem_size=cfg.stem_size, num_features=num_features,
                        width_multiplier=cfg.width, round_limit=cfg.round_limit, act_layer=nn.SiLU,
                        bn_eps=1e-3, pad_same=cfg.pad_same, **overrides)


_PAPER = "Tan & Le, EfficientNetV2: Smaller Models and Faster Training, ICML 2021"
# Symmetric and SAME padding both take any input size; the total stride of 32 needs no divisibility.
_SPEC = dict(family="efficientnetv2", paper=_PAPER, size_divisor=1, remap=remap_torchvision_mbconv)


# S/M/L: torchvision's eval transforms resize straight to the crop size (crop_pct 1).
@register_model(**_SPEC, input_size=(3, 384, 384), crop_pct=1.0, interpolation="bilinear",
                reference="torchvision:efficientnet_v2_s", reference_params=21_458_488,
                aliases=("efficientnet_v2_s",))
def efficientnetv2_s(**overrides) -> EfficientNet:
    return _create_efficientnetv2("efficientnetv2_s", **overrides)


@register_model(**_SPEC, input_size=(3, 480, 480), crop_pct=1.0, interpolation="bilinear",
                reference="torchvision:efficientnet_v2_m", reference_params=54_139_356,
                aliases=("efficientnet_v2_m",))
def efficientnetv2_m(**overrides) -> EfficientNet:
    return _create_efficientnetv2("efficientnetv2_m", **overrides)


@register_model(**_SPEC, input_size=(3, 480, 480), crop_pct=1.0, interpolation="bicubic",
                mean=INCEPTION_MEAN, std=INCEPTION_STD, reference="torchvision:efficientnet_v2_l",
                reference_params=118_515_272, aliases=("efficientnet_v2_l",))
def efficientnetv2_l(**overrides) -> EfficientNet:
    return _create_efficientnetv2("efficientnetv2_l", **overrides)


# B0-B3: timm's test-time size and crop (it trains them smaller: 192/192/208/240).
@register_model(**_SPEC, input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
                reference="timm:tf_efficientnetv2_b0", reference_params=7_139_704)
def tf_efficientnetv2_b0(**overrides) -> EfficientNet:
    return _create_efficientnetv2("tf_efficientnetv2_b0", **overrides)


@register_model(**_SPEC, input_size=(3, 240, 240), crop_pct=0.882, interpolation="bicubic",
                reference="timm:tf_efficientnetv2_b1", reference_params=8_141_052)
def tf_efficientnetv2_b1(**overrides) -> EfficientNet:
    return _create_efficientnetv2("tf_efficientnetv2_b1", **overrides)


@register_model(**_SPEC, input_size=(3, 260, 260), crop_pct=0.89, interpolation="bicubic",
                reference="timm:tf_efficientnetv2_b2", reference_params=10_096_086)
def tf_efficientnetv2_b2(**overrides) -> EfficientNet:
    return _create_efficientnetv2("tf_efficientnetv2_b2", **overrides)


@register_model(**_SPEC, input_size=(3, 300, 300), crop_pct=0.904, interpolation="bicubic",
                reference="timm:tf_efficientnetv2_b3", reference_params=14_358_406)
def tf_efficientnetv2_b3(**overrides) -> EfficientNet:
    return _create_efficientnetv2("tf_efficientnetv2_b3", **overrides)
