"""MnasNet.

Paper: "MnasNet: Platform-Aware Neural Architecture Search for Mobile" (Tan et al., CVPR 2019).

Searched MBConv networks with ReLU: A1 (the paper's headline model, SE in three stages) and B1 (no SE,
the one torchvision ships as ``mnasnet1_0``). Built on the shared MBConv skeleton of
``_efficientnet_blocks`` with timm's keys (timm names them ``semnasnet_100`` and ``mnasnet_100``);
:func:`remap_torchvision_mnasnet` converts torchvision's ``mnasnet1_0`` checkpoints.
"""

from __future__ import annotations

import torch

from ._efficientnet_blocks import EfficientNet, decode_arch
from ._registry import StateDict, register_model

# Block strings (legend in _efficientnet_blocks), from the TF reference mnasnet_models.py.
_ARCH_A1 = (
    ("ds_r1_k3_s1_e1_c16_noskip",),
    ("ir_r2_k3_s2_e6_c24",),
    ("ir_r3_k5_s2_e3_c40_se0.25",),
    ("ir_r4_k3_s2_e6_c80",),
    ("ir_r2_k3_s1_e6_c112_se0.25",),
    ("ir_r3_k5_s2_e6_c160_se0.25",),
    ("ir_r1_k3_s1_e6_c320",),
)
_ARCH_B1 = (
    ("ds_r1_k3_s1_c16_noskip",),
    ("ir_r3_k3_s2_e3_c24",),
    ("ir_r3_k5_s2_e3_c40",),
    ("ir_r3_k5_s2_e6_c80",),
    ("ir_r2_k3_s1_e6_c96",),
    ("ir_r4_k5_s2_e6_c192",),
    ("ir_r1_k3_s1_e6_c320_noskip",),
)
_ARCHS = {"semnasnet_100": _ARCH_A1, "mnasnet_100": _ARCH_B1}


def _create_mnasnet(name: str, **overrides) -> EfficientNet:
    return EfficientNet(decode_arch(_ARCHS[name]), stem_size=32, num_features=1280, **overrides)


# torchvision's MNASNet is one flat ``layers`` Sequential: stem conv/BN (0, 1), the separable first block
# (3, 4, 6, 7), six stacks of _InvertedResidual (8-13, each ``layers`` = pw 0/1, dw 3/4, pwl 6/7),
# head conv/BN (14, 15).
_TV_FLAT = {"0": "conv_stem", "1": "bn1", "3": "blocks.0.0.conv_dw", "4": "blocks.0.0.bn1",
            "6": "blocks.0.0.conv_pw", "7": "blocks.0.0.bn2", "14": "conv_head", "15": "bn2"}
_TV_BLOCK = {"0": "conv_pw", "1": "bn1", "3": "conv_dw", "4": "bn2", "6": "conv_pwl", "7": "bn3"}
_TV_FIRST_STACK = 8


def remap_torchvision_mnasnet(state: StateDict) -> dict[str, torch.Tensor]:
    """torchvision ``mnasnet1_0`` (``layers.*``, ``classifier.1``) -> our keys."""
    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "classifier":  # Sequential(Dropout, Linear)
            remapped[f"classifier.{parts[-1]}"] = value
        elif parts[1] in _TV_FLAT:
            remapped[".".join([_TV_FLAT[parts[1]], *parts[2:]])] = value
        else:  # layers.<stack>.<block>.layers.<j>.<param>
            stage = int(parts[1]) - _TV_FIRST_STACK + 1
            remapped[".".join([f"blocks.{stage}.{parts[2]}", _TV_BLOCK[parts[4]], *parts[5:]])] = value
    return remapped


_PAPER = "Tan et al., MnasNet: Platform-Aware Neural Architecture Search for Mobile, CVPR 2019"


@register_model(family="mnasnet", paper=_PAPER, interpolation="bicubic", reference="timm:semnasnet_100",
                reference_params=3_887_038, aliases=("mnasnet_a1",))
def semnasnet_100(**overrides) -> EfficientNet:
    return _create_mnasnet("semnasnet_100", **overrides)


@register_model(family="mnasnet", paper=_PAPER, interpolation="bicubic", reference="timm:mnasnet_100",
                reference_params=4_383_312, aliases=("mnasnet_b1", "mnasnet1_0"),
                remap=remap_torchvision_mnasnet)
def mnasnet_100(**overrides) -> EfficientNet:
    return _create_mnasnet("mnasnet_100", **overrides)
