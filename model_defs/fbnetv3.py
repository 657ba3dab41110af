"""FBNetV3.

Paper: "FBNetV3: Joint Architecture-Recipe Search using Predictor Pretraining" (Dai et al., CVPR 2021).

MobileNetV3-style networks found by a joint architecture and training-recipe search: MBConv blocks with
Hardswish throughout, hard-sigmoid Squeeze-and-Excitation in the later stages and MobileNetV3's
"efficient head" (1x1 expand to 6x, global pool, 1x1 conv to 1984 without bias, Hardswish,
classifier). The model is :class:`~model_defs.mobilenetv3.MobileNetV3`, as in timm, with what FBNetV3
changes: a wider stem for the larger variants, a bias-free head conv, and an SE that squeezes a quarter
of the block *input* width (the expanded width over the expansion), rounded to a multiple of 8 with a
95% floor, with the block's Hardswish inside.

The architectures are mobile-vision's ``FBNetV3_A``..``G``
(``mobile_cv/arch/fbnet_v2/fbnet_modeldef_cls_fbnetv3.py``). timm defines B, D and G
(``timm/models/mobilenetv3.py``, ``_gen_fbnetv3``) and trained its own weights for them: those three
follow timm and load its state_dicts. timm's B table is mobile-vision's A/B table (mobile-vision's B
is A evaluated at 248 instead of 224), and timm's D and G tables are mobile-vision's. timm drops two
things mobile-vision has, so mobile-vision's count is the stem width higher (16 / 24 / 32 parameters):

- the stem conv's bias;
- the explicit padding of some strided depthwise convs: padding 1 on a 5x5 stride-2 dw conv and 0 on a
  3x3 one, instead of k // 2. They shrink the feature maps by one row and column (A at 224: 13x13 and
  6x6 where symmetric padding gives 14x14 and 7x7). A, B, C, E and F have them; D and G do not.

A, C, E and F exist only in mobile-vision, so they follow it: stem bias and paddings included. Their
parameter counts are mobile-vision's own models built and counted (commit bb8465c), and their outputs
match those models' (weights copied over) to 1e-6; mobile-vision's ``model_info_fbnet_v3.json`` lists
about 0.7% fewer ("params_m"), a count its definitions do not reproduce.

Export: HardSwish needs opset >= 14 (P-HSWISH), as for MobileNetV3.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ._efficientnet_blocks import BlockDef, decode_arch
from ._layers import SqueezeExcite, make_divisible
from ._registry import register_model
from .mobilenetv3 import MobileNetV3


def fbnetv3_se(channels: int, block: BlockDef, act_layer: type[nn.Module]) -> nn.Module:
    """FBNetV3's SE on ``channels`` (the expanded width): squeezes to ``se_ratio`` of the block input,
    rounded as mobile-vision's ``get_divisible_by`` and timm's ``round_channels(round_limit=0.95)`` both
    do, with the block's activation inside and a hard-sigmoid gate."""
    squeezed = make_divisible(channels * block.se_ratio / block.expansion, 8, round_limit=0.95)
    return SqueezeExcite(channels, squeezed, act_layer, nn.Hardsigmoid)


@dataclass(frozen=True)
class FBNetV3Config:
    stem_size: int
    stages: tuple[tuple[str, ...], ...]
    stem_bias: bool = False  # mobile-vision's stem conv has a bias, timm's has none
    # mobile-vision's explicit paddings: (stage, block, padding) of a strided dw conv that does not
    # pad k // 2. The convs keep their weights; only the rows and columns they see change.
    dw_paddings: tuple[tuple[int, int, int], ...] = ()


# Block strings (see _efficientnet_blocks): <type>_r<repeats>_k<kernel>_s<stride>_e<expansion>_c<channels>
# [_se0.25]; ds = mobile-vision's e1 "ir" (no 1x1 expand). Stages as timm splits them (mobile-vision
# keeps the two stride-16 groups in one stage); the last stage is the head's 1x1 expand (6x).
_FBNETV3_AB = (
    ("ds_r2_k3_s1_e1_c16",),
    ("ir_r1_k5_s2_e4_c24", "ir_r3_k5_s1_e2_c24"),
    ("ir_r1_k5_s2_e5_c40_se0.25", "ir_r4_k5_s1_e3_c40_se0.25"),
    ("ir_r1_k5_s2_e5_c72", "ir_r4_k3_s1_e3_c72"),
    ("ir_r1_k3_s1_e5_c120_se0.25", "ir_r5_k5_s1_e3_c120_se0.25"),
    ("ir_r1_k3_s2_e6_c184_se0.25", "ir_r5_k5_s1_e4_c184_se0.25", "ir_r1_k5_s1_e6_c224_se0.25"),
    ("cn_r1_k1_s1_c1344",),
)
_FBNETV3_C = (
    ("ds_r2_k3_s1_e1_c16",),
    ("ir_r1_k5_s2_e5_c24", "ir_r4_k3_s1_e3_c24"),
    ("ir_r1_k5_s2_e5_c48_se0.25", "ir_r4_k5_s1_e2_c48_se0.25"),
    ("ir_r1_k5_s2_e4_c88", "ir_r4_k3_s1_e3_c88"),
    ("ir_r1_k3_s1_e4_c120_se0.25", "ir_r5_k5_s1_e3_c120_se0.25"),
    ("ir_r1_k5_s2_e5_c216_se0.25", "ir_r5_k5_s1_e5_c216_se0.25", "ir_r1_k5_s1_e6_c216_se0.25"),
    ("cn_r1_k1_s1_c1296",),
)
_FBNETV3_D = (
    ("ds_r2_k3_s1_e1_c16",),
    ("ir_r1_k3_s2_e5_c24", "ir_r5_k3_s1_e2_c24"),
    ("ir_r1_k5_s2_e4_c40_se0.25", "ir_r4_k3_s1_e3_c40_se0.25"),
    ("ir_r1_k3_s2_e5_c72", "ir_r4_k3_s1_e3_c72"),
    ("ir_r1_k3_s1_e5_c128_se0.25", "ir_r6_k5_s1_e3_c128_se0.25"),
    ("ir_r1_k3_s2_e6_c208_se0.25", "ir_r5_k5_s1_e5_c208_se0.25", "ir_r1_k5_s1_e6_c240_se0.25"),
    ("cn_r1_k1_s1_c1440",),
)
_FBNETV3_E = (
    ("ds_r3_k3_s1_e1_c16",),
    ("ir_r1_k5_s2_e4_c24", "ir_r4_k5_s1_e2_c24"),
    ("ir_r1_k5_s2_e4_c48_se0.25", "ir_r4_k5_s1_e3_c48_se0.25"),
    ("ir_r1_k5_s2_e5_c80", "ir_r4_k3_s1_e3_c80"),
    ("ir_r1_k3_s1_e5_c128_se0.25", "ir_r7_k5_s1_e3_c128_se0.25"),
    ("ir_r1_k3_s2_e6_c216_se0.25", "ir_r5_k5_s1_e5_c216_se0.25", "ir_r1_k5_s1_e6_c240_se0.25"),
    ("cn_r1_k1_s1_c1440",),
)
_FBNETV3_F = (
    ("ds_r3_k3_s1_e1_c24",),
    ("ir_r1_k5_s2_e4_c32", "ir_r4_k5_s1_e2_c32"),
    ("ir_r1_k5_s2_e4_c56_se0.25", "ir_r4_k5_s1_e3_c56_se0.25"),
    ("ir_r1_k5_s2_e5_c88", "ir_r4_k3_s1_e3_c88"),
    ("ir_r1_k3_s1_e5_c144_se0.25", "ir_r8_k5_s1_e3_c144_se0.25"),
    ("ir_r1_k3_s2_e6_c248_se0.25", "ir_r6_k5_s1_e5_c248_se0.25", "ir_r1_k5_s1_e6_c272_se0.25"),
    ("cn_r1_k1_s1_c1632",),
)
_FBNETV3_G = (
    ("ds_r3_k3_s1_e1_c24",),
    ("ir_r1_k5_s2_e4_c40", "ir_r4_k5_s1_e2_c40"),
    ("ir_r1_k5_s2_e4_c56_se0.25", "ir_r4_k5_s1_e3_c56_se0.25"),
    ("ir_r1_k5_s2_e5_c104", "ir_r4_k3_s1_e3_c104"),
    ("ir_r1_k3_s1_e5_c160_se0.25", "ir_r8_k5_s1_e3_c160_se0.25"),
    ("ir_r1_k3_s2_e6_c264_se0.25", "ir_r6_k5_s1_e5_c264_se0.25", "ir_r2_k5_s1_e6_c288_se0.25"),
    ("cn_r1_k1_s1_c1728",),
)

# The strided dw convs are the first blocks of stages 3 (stride 16) and 5 (stride 32).
_CONFIGS = {
    "fbnetv3_a": FBNetV3Config(16, _FBNETV3_AB, stem_bias=True, dw_paddings=((3, 0, 1), (5, 0, 0))),
    "fbnetv3_b": FBNetV3Config(16, _FBNETV3_AB),
    "fbnetv3_c": FBNetV3Config(16, _FBNETV3_C, stem_bias=True, dw_paddings=((3, 0, 1), (5, 0, 1))),
    "fbnetv3_d": FBNetV3Config(24, _FBNETV3_D),
    "fbnetv3_e": FBNetV3Config(24, _FBNETV3_E, stem_bias=True, dw_paddings=((3, 0, 1),)),
    "fbnetv3_f": FBNetV3Config(24, _FBNETV3_F, stem_bias=True, dw_paddings=((5, 0, 0),)),
    "fbnetv3_g": FBNetV3Config(32, _FBNETV3_G),
}
_NUM_FEATURES = 1984


def _create_fbnetv3(name: str, **overrides) -> MobileNetV3:
    cfg = _CONFIGS[name]
    model = MobileNetV3(decode_arch(cfg.stages), _NUM_FEATURES, stem_size=cfg.stem_size,
                        stem_bias=cfg.stem_bias, head_bias=False, se_layer=fbnetv3_se, **overrides)
    for stage, index, padding in cfg.dw_paddings:
        model.blocks[stage][index].conv_dw.padding = (padding, padding)
    return model


_PAPER = "Dai et al., FBNetV3: Joint Architecture-Recipe Search using Predictor Pretraining, CVPR 2021"
# Any size from min_size up works (no conv needs a multiple of its stride, the head pools globally).
_FAMILY = dict(family="fbnetv3", paper=_PAPER, size_divisor=1)
# timm's pretrained cfgs (fbnetv3_*.ra2_in1k): bilinear, crop 0.95, ImageNet mean/std; input_size is the
# cfg's default (the training size); timm's test_input_size, where its top-1 is reported, is 256 for B
# and D and 288 for G.
_TIMM_EVAL = dict(**_FAMILY, interpolation="bilinear", crop_pct=0.95)
# mobile-vision's model_info_fbnet_v3.json: "resolution" and "resize" (crop_pct = resolution / resize);
# its eval transform is torchvision's Resize (bilinear), CenterCrop and the ImageNet mean/std. The
# explicit paddings raise the smallest input that still leaves a map at stride 32 (min_size).
_MOBILE_CV_EVAL = dict(**_FAMILY, interpolation="bilinear")


@register_model(**_MOBILE_CV_EVAL, input_size=(3, 224, 224),
                crop_pct=224 / 242, min_size=49, reference_params=8_598_480)
def fbnetv3_a(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_a", **overrides)


@register_model(**_TIMM_EVAL, input_size=(3, 224, 224),
                reference="timm:fbnetv3_b", reference_params=8_598_464)
def fbnetv3_b(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_b", **overrides)


@register_model(**_MOBILE_CV_EVAL, input_size=(3, 248, 248),
                crop_pct=248 / 272, min_size=49, reference_params=9_973_816)
def fbnetv3_c(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_c", **overrides)


@register_model(**_TIMM_EVAL, input_size=(3, 224, 224),
                reference="timm:fbnetv3_d", reference_params=10_306_272)
def fbnetv3_d(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_d", **overrides)


@register_model(**_MOBILE_CV_EVAL, input_size=(3, 264, 264),
                crop_pct=264 / 291, reference_params=10_772_896)
def fbnetv3_e(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_e", **overrides)


@register_model(**_MOBILE_CV_EVAL, input_size=(3, 272, 272),
                crop_pct=272 / 296, min_size=33, reference_params=13_896_160)
def fbnetv3_f(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_f", **overrides)


@register_model(**_TIMM_EVAL, input_size=(3, 240, 240),
                reference="timm:fbnetv3_g", reference_params=16_623_888)
def fbnetv3_g(**overrides) -> MobileNetV3:
    return _create_fbnetv3("fbnetv3_g", **overrides)
