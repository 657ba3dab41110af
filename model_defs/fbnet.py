"""FBNet A, B and C.

Paper: "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural Architecture Search"
(Wu et al., CVPR 2019).

MBConv networks searched per layer (kernel 3/5, expansion 1/3/6, grouped pointwise convs, or skip) with
ReLU, built on the shared skeleton of ``_efficientnet_blocks`` with timm's module names.

- ``fbnetc_100`` is timm's FBNet-C (derived from the paper's figure; mobile-vision's FBNet-C differs:
  5,592,784 parameters). Its ImageNet weights were trained with BN eps 1e-3, which timm applies only
  when it loads them, so a random ``timm.create_model("fbnetc_100")`` has eps 1e-5: the registry holds
  the checkpoint's eps, and tests/test_family_fbnet.py checks parity against timm built with it.
- ``fbnet_a``/``fbnet_b`` follow facebookresearch/mobile-vision
  (``mobile_cv/arch/fbnet_v2/fbnet_modeldef_cls_fbnet.py``): every conv has a bias (``use_bias``, and
  the stem and head convs by default), an ``ir`` of expansion 1 has no 1x1 expand (our ``ds``), the
  ``ir_k*_g2`` blocks shuffle their input over 2 groups and run the projection in 2 groups, the head is
  a 1x1 conv-BN-ReLU then global pooling and a 1x1 conv classifier (a Linear here). Its identity
  "skip" ops (no parameters, no compute) are left out, with the stage that holds only one. Neither timm
  nor torchvision defines them: the registry checks the exact parameter counts of ../shared/families.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._efficientnet_blocks import EfficientNet, decode_arch
from ._registry import register_model

# Block strings (legend in _efficientnet_blocks); timm's FBNet-C.
_ARCH_C = (
    ("ir_r1_k3_s1_e1_c16",),
    ("ir_r1_k3_s2_e6_c24", "ir_r2_k3_s1_e1_c24"),
    ("ir_r1_k5_s2_e6_c32", "ir_r1_k5_s1_e3_c32", "ir_r1_k5_s1_e6_c32", "ir_r1_k3_s1_e6_c32"),
    ("ir_r1_k5_s2_e6_c64", "ir_r1_k5_s1_e3_c64", "ir_r2_k5_s1_e6_c64"),
    ("ir_r3_k5_s1_e6_c112", "ir_r1_k5_s1_e3_c112"),
    ("ir_r4_k5_s2_e6_c184",),
    ("ir_r1_k3_s1_e6_c352",),
)
# mobile-vision's stages 2-5 (FBNet-A's stage 1 is a lone identity skip).
_ARCH_A = (
    ("ir_r1_k3_s2_e3_c24", "ds_r1_k3_s1_c24"),
    ("ir_r1_k5_s2_e6_c32", "ir_r1_k3_s1_e3_c32", "ds_r1_k5_s1_c32", "ir_r1_k3_s1_e3_c32"),
    ("ir_r1_k5_s2_e6_c64", "ir_r1_k5_s1_e3_c64", "ds_r1_k5_s1_c64_g2", "ir_r1_k5_s1_e6_c64",
     "ir_r1_k3_s1_e6_c112", "ds_r1_k5_s1_c112_g2", "ir_r1_k5_s1_e3_c112", "ds_r1_k3_s1_c112_g2"),
    ("ir_r1_k5_s2_e6_c184", "ir_r1_k5_s1_e6_c184", "ir_r1_k5_s1_e3_c184", "ir_r1_k5_s1_e6_c184",
     "ir_r1_k5_s1_e6_c352"),
)
# mobile-vision's stages 1-5 (the identity skip in stage 4 left out).
_ARCH_B = (
    ("ds_r1_k3_s1_c16",),
    ("ir_r1_k3_s2_e6_c24", "ds_r1_k5_s1_c24", "ds_r2_k3_s1_c24"),
    ("ir_r1_k5_s2_e6_c32", "ir_r1_k5_s1_e3_c32", "ir_r1_k3_s1_e6_c32", "ir_r1_k5_s1_e6_c32"),
    ("ir_r1_k5_s2_e6_c64", "ir_r1_k5_s1_e6_c64", "ir_r1_k5_s1_e3_c64", "ir_r1_k5_s1_e6_c112",
     "ds_r1_k3_s1_c112", "ds_r1_k5_s1_c112", "ir_r1_k5_s1_e3_c112"),
    ("ir_r1_k5_s2_e6_c184", "ds_r1_k5_s1_c184", "ir_r2_k5_s1_e6_c184", "ir_r1_k3_s1_e6_c352"),
)


@dataclass(frozen=True)
class FBNetConfig:
    arch: tuple[tuple[str, ...], ...]
    num_features: int
    bn_eps: float = 1e-5
    conv_bias: bool = False


_CONFIGS = {
    "fbnet_a": FBNetConfig(_ARCH_A, num_features=1504, conv_bias=True),
    "fbnet_b": FBNetConfig(_ARCH_B, num_features=1984, conv_bias=True),
    "fbnetc_100": FBNetConfig(_ARCH_C, num_features=1984, bn_eps=1e-3),
}


def _create_fbnet(name: str, **overrides) -> EfficientNet:
    cfg = _CONFIGS[name]
    return EfficientNet(decode_arch(cfg.arch), stem_size=16, num_features=cfg.num_features, bn_eps=cfg.bn_eps,
                        conv_bias=cfg.conv_bias, **overrides)


_PAPER = ("Wu et al., FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable Neural Architecture "
          "Search, CVPR 2019")


@register_model(family="fbnet", paper=_PAPER, reference_params=4_321_232)
def fbnet_a(**overrides) -> EfficientNet:
    return _create_fbnet("fbnet_a", **overrides)


@register_model(family="fbnet", paper=_PAPER, reference_params=4_818_216)
def fbnet_b(**overrides) -> EfficientNet:
    return _create_fbnet("fbnet_b", **overrides)


# timm's .rmsp_in1k weights: bilinear, crop 0.875. No registry reference: see the module docstring.
@register_model(family="fbnet", paper=_PAPER, reference_params=5_572_200)
def fbnetc_100(**overrides) -> EfficientNet:
    return _create_fbnet("fbnetc_100", **overrides)
