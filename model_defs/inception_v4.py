"""Inception-v4.

Paper: "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning"
(Szegedy et al., AAAI 2017), Figures 3-9.

A pure Inception network (no residuals): a stem of VALID 3x3 convs and three two-branch "mixed"
blocks (299 -> 35x35x384), 4 x Inception-A, Reduction-A (-> 17x17x1024), 7 x Inception-B,
Reduction-B (-> 8x8x1536), 3 x Inception-C, global average pooling and a linear classifier. Every
conv is followed by BatchNorm (TF's eps 1e-3) and ReLU. Module names are timm's ``inception_v4``
(``features.<i>``, ``branch<j>``, ``last_linear``), so its TF-ported checkpoint loads as it is.

Export notes (../shared/families.md):
- The 3x3 average pools of the A/B/C blocks leave their padding out of the average
  (``count_include_pad=False``, ONNX AveragePool ``count_include_pad=0``), as TF-slim and timm do.
- The VALID convs and pools take any input size from 75 px on (``_inception_blocks``): the spec
  says so with ``size_divisor=1, min_size=75``, and a smaller ``--img-size`` is a one-line error. The
  head is a global pool (GlobalAveragePool), so no P-ADAPT bin size depends on the resolution.
- No ceil-mode pools, no in-graph input transform (timm's weights take [-1, 1] inputs: mean = std = 0.5).
"""

from __future__ import annotations

import torch
from torch import nn

from ._inception_blocks import (
    TF_SLIM_SPEC,
    InceptionBranches,
    branch_from_string,
    layer_from_token,
    numbered,
)
from ._layers import global_avg_pool
from ._registry import register_model


class InceptionC(nn.Module):
    """Inception-C (Figure 6): its two conv branches each fork into a 1x3 and a 3x1 conv whose outputs
    are concatenated, so it is not a plain set of chains; timm names the pieces flat (``branch1_1a``)."""

    def __init__(self, in_chs: int):
        super().__init__()
        self.branch0, _ = layer_from_token("c256", in_chs)
        self.branch1_0, chs = layer_from_token("c384", in_chs)
        self.branch1_1a, _ = layer_from_token("c256_k1x3", chs)
        self.branch1_1b, _ = layer_from_token("c256_k3x1", chs)
        self.branch2_0, chs = layer_from_token("c384", in_chs)
        self.branch2_1, chs = layer_from_token("c448_k3x1", chs)
        self.branch2_2, chs = layer_from_token("c512_k1x3", chs)
        self.branch2_3a, _ = layer_from_token("c256_k1x3", chs)
        self.branch2_3b, _ = layer_from_token("c256_k3x1", chs)
        self.branch3, _ = branch_from_string("avg c256", in_chs)
        self.out_chs = 256 + 2 * 256 + 2 * 256 + 256  # branch0, the two forks of branch1 and branch2, branch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.branch1_0(x)
        x2 = self.branch2_2(self.branch2_1(self.branch2_0(x)))
        return torch.cat([self.branch0(x), self.branch1_1a(x1), self.branch1_1b(x1),
                          self.branch2_3a(x2), self.branch2_3b(x2), self.branch3(x)], 1)


class InceptionV4(nn.Module):
    """Stem convs, the mixed and Inception-A/B blocks as branch tables, then the Inception-C blocks,
    all in one ``features`` sequence as timm numbers them."""

    def __init__(self, depths: tuple[int, int, int], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        layers, chs = [], in_chans
        for token in _STEM:
            layer, chs = layer_from_token(token, chs)
            layers.append(layer)
        n_a, n_b, n_c = depths
        tables = [_MIXED_3A, _MIXED_4A, _MIXED_5A, *[_INCEPTION_A] * n_a, _REDUCTION_A, *[_INCEPTION_B] * n_b,
                  _REDUCTION_B]
        for table in tables:
            layers.append(InceptionBranches(chs, table))
            chs = layers[-1].out_chs
        for _ in range(n_c):
            layers.append(InceptionC(chs))
            chs = layers[-1].out_chs
        self.features = nn.Sequential(*layers)
        self.num_features = chs
        self.last_linear = nn.Linear(chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(global_avg_pool(self.forward_features(x)).flatten(1))


# The paper's Figures 3-8 in the notation of _inception_blocks (legend there). Mixed 3a/5a name
# their two branches by kind, as timm does.
_STEM = ("c32_k3_s2_v", "c32_k3_v", "c64_k3")  # 299 -> 147x147x64
_MIXED_3A = {"maxpool": "max", "conv": "c96_k3_s2_v"}  # -> 73x73x160
_MIXED_4A = numbered("c64 c96_k3_v", "c64 c64_k1x7 c64_k7x1 c96_k3_v")  # -> 71x71x192
_MIXED_5A = {"conv": "c192_k3_s2_v", "maxpool": "max"}  # -> 35x35x384
_INCEPTION_A = numbered("c96", "c64 c96_k3", "c64 c96_k3 c96_k3", "avg c96")
_REDUCTION_A = numbered("c384_k3_s2_v", "c192 c224_k3 c256_k3_s2_v", "max")  # k, l, m, n = 192, 224, 256, 384
_INCEPTION_B = numbered("c384", "c192 c224_k1x7 c256_k7x1", "c192 c192_k7x1 c224_k1x7 c224_k7x1 c256_k1x7",
                        "avg c128")
_REDUCTION_B = numbered("c192 c192_k3_s2_v", "c256 c256_k1x7 c320_k7x1 c320_k3_s2_v", "max")

_DEPTHS = {"inception_v4": (4, 7, 3)}  # Inception-A, -B, -C blocks (Figure 9)


def _create_inception_v4(name: str, **overrides) -> InceptionV4:
    return InceptionV4(_DEPTHS[name], **overrides)


# timm's .tf_in1k weights: a centre crop of 299 from a bicubic resize to 299 / 0.875.
@register_model(family="inception_v4", crop_pct=0.875, reference="timm:inception_v4",
                reference_params=42_679_816, **TF_SLIM_SPEC)
def inception_v4(**overrides) -> InceptionV4:
    return _create_inception_v4("inception_v4", **overrides)
