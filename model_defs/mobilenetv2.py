"""MobileNetV2.

Paper: "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Sandler et al., CVPR 2018).

Inverted residual blocks with linear bottlenecks and ReLU6, built on the shared MBConv skeleton of
``_efficientnet_blocks``. Keys follow timm's ``mobilenetv2_*``; :func:`remap_torchvision_mobilenetv2`
converts torchvision's ``mobilenet_v2`` (``features.*``) checkpoints.
"""

from __future__ import annotations

import torch
from torch import nn

from ._efficientnet_blocks import EfficientNet, decode_arch, round_channels, torchvision_end_key
from ._registry import StateDict, register_model

# The paper's Table 2 (t = e, c, n = r, s); stage widths before the width multiplier.
_ARCH = (
    ("ds_r1_k3_s1_c16",),
    ("ir_r2_k3_s2_e6_c24",),
    ("ir_r3_k3_s2_e6_c32",),
    ("ir_r4_k3_s2_e6_c64",),
    ("ir_r3_k3_s1_e6_c96",),
    ("ir_r3_k3_s2_e6_c160",),
    ("ir_r1_k3_s1_e6_c320",),
)


def _create_mobilenetv2(width_multiplier: float, **overrides) -> EfficientNet:
    # The head never shrinks below 1280 channels, the paper's choice for multipliers < 1.
    num_features = max(1280, round_channels(1280, width_multiplier))
    return EfficientNet(decode_arch(_ARCH), stem_size=32, num_features=num_features,
                        width_multiplier=width_multiplier, act_layer=nn.ReLU6, **overrides)


def remap_torchvision_mobilenetv2(state: StateDict) -> dict[str, torch.Tensor]:
    """torchvision ``mobilenet_v2`` -> our keys.

    torchvision numbers the blocks flat (``features.1`` .. ``features.17``) between the stem
    (``features.0``) and the head conv (``features.18``); a block's ``conv`` Sequential is
    [pw ConvBNReLU,] dw ConvBNReLU, pw-linear Conv2d, BN.
    """
    positions = [(stage, index) for stage, blocks in enumerate(decode_arch(_ARCH)) for index in range(len(blocks))]
    head = len(positions) + 1
    expanded = {key.split(".")[1] for key in state if ".conv.3." in key}
    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if (end := torchvision_end_key(parts, head)) is not None:
            remapped[end] = value
            continue
        feature, rest = int(parts[1]), parts[2:]
        stage, index = positions[feature - 1]
        if parts[1] in expanded:
            names = {("0", "0"): "conv_pw", ("0", "1"): "bn1", ("1", "0"): "conv_dw", ("1", "1"): "bn2",
                     "2": "conv_pwl", "3": "bn3"}
        else:
            names = {("0", "0"): "conv_dw", ("0", "1"): "bn1", "1": "conv_pw", "2": "bn2"}
        # rest = ["conv", j, (k,) param]: ConvBNReLU children have a second index, plain layers do not.
        if rest[1] in names:
            name, tail = names[rest[1]], rest[2:]
        else:
            name, tail = names[rest[1], rest[2]], rest[3:]
        remapped[".".join([f"blocks.{stage}.{index}", name, *tail])] = value
    return remapped


_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018"
_SPEC = dict(family="mobilenetv2", paper=_PAPER, interpolation="bicubic", crop_pct=0.875,
             remap=remap_torchvision_mobilenetv2)


# Parameter counts of 050/075/140: timm's models, counted here (families.md lists only the 1.0 width).
@register_model(**_SPEC, reference="timm:mobilenetv2_050", reference_params=1_968_680)
def mobilenetv2_050(**overrides) -> EfficientNet:
    return _create_mobilenetv2(0.5, **overrides)


@register_model(**_SPEC, reference="timm:mobilenetv2_075", reference_params=2_636_424)
def mobilenetv2_075(**overrides) -> EfficientNet:
    return _create_mobilenetv2(0.75, **overrides)


@register_model(**_SPEC, reference="timm:mobilenetv2_100", reference_params=3_504_872, aliases=("mobilenet_v2",))
def mobilenetv2_100(**overrides) -> EfficientNet:
    return _create_mobilenetv2(1.0, **overrides)


@register_model(**_SPEC, reference="timm:mobilenetv2_140", reference_params=6_108_776)
def mobilenetv2_140(**overrides) -> EfficientNet:
    return _create_mobilenetv2(1.4, **overrides)
