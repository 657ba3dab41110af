"""Inception-ResNet-v2.

Paper: "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning"
(Szegedy et al., AAAI 2017), Figures 15-19, Section 3.3.

Inception blocks whose concatenated branches go through a linear 1x1 conv back to the block's input
width and are added to the input: 10 x Inception-ResNet-A at 35x35x320, Reduction-A (Mixed_6a, ->
17x17x1088), 20 x Inception-ResNet-B, Reduction-B (Mixed_7a, -> 8x8x2080), 10 x Inception-ResNet-C,
a 1x1 conv to 1536, global average pooling and a linear classifier. The network is TF-slim's
``inception_resnet_v2.py``, which the weights come from and timm ports: its stem (VALID convs, two
max pools and a Mixed_5b block, 299 -> 35x35x320) is not the paper's Figure 3 stem (35x35x384), and
the last C block has neither a residual scale nor a ReLU. Module names are timm's (``conv2d_1a``,
``mixed_5b``, ``repeat.<i>.branch<j>``, ``block8``, ``classif``), so its checkpoints load as they are.

Export notes (../shared/families.md):
- Residual scaling (Section 3.3: scaling the residuals down keeps training stable): each block adds
  ``scale * conv(branches)`` with TF-slim's constants 0.17 (A), 0.10 (B) and 0.20 (C) (1.0 on the
  last block, as timm has it). The scale multiplies the 1x1 conv's weight and bias, not its output,
  so the export folds it into the conv's initializers and the graph is Conv -> Add -> Relu, as a plain
  residual is, with weights the INT8 quantizer sees as weights (``ScaledConv2d``).
- The 3x3 average pool of Mixed_5b leaves its padding out of the average (``count_include_pad=False``,
  ONNX AveragePool ``count_include_pad=0``), as TF-slim and timm do.
- The VALID convs and pools take any input size from 75 px on (``_inception_blocks``): the spec says
  so with ``size_divisor=1, min_size=75``, and a smaller ``--img-size`` is a one-line error. The head is
  a global pool (GlobalAveragePool), so no P-ADAPT bin size depends on the resolution.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from ._inception_blocks import TF_SLIM_SPEC, InceptionBranches, layer_from_token, numbered
from ._layers import global_avg_pool
from ._registry import register_model


class ScaledConv2d(nn.Conv2d):
    """A 1x1 conv (with bias) whose output is multiplied by ``scale``, computed as a conv with scaled
    weight and bias: the export folds the products into the conv's initializers. A Mul on the output
    would be folded too, by onnxsim, but into Constant nodes, which ONNX Runtime's quantizer takes for
    activations: float weights left in the INT8 file (108 MB instead of 58) and quantized per tensor
    at run time."""

    def __init__(self, in_chs: int, out_chs: int, scale: float):
        super().__init__(in_chs, out_chs, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias * self.scale)


class ScaledResidual(InceptionBranches):
    """An Inception-ResNet block: the concatenated branches, a 1x1 conv (bias, no BN) back to
    ``in_chs`` scaled by ``scale``, plus the input, then ReLU (none on the network's last block)."""

    def __init__(self, in_chs: int, branches: Mapping[str, str], scale: float, relu: bool = True):
        super().__init__(in_chs, branches)
        self.conv2d = ScaledConv2d(self.out_chs, in_chs, scale)
        self.act = nn.ReLU() if relu else nn.Identity()
        self.out_chs = in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2d(super().forward(x)) + x)


class InceptionResNetV2(nn.Module):
    """The stem layers, the three residual stages after their mixed blocks, the last C block and the
    1x1 conv, as named attributes in timm's order (which is also the forward order)."""

    def __init__(self, stages: tuple[tuple[int, float], ...], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        chs = in_chans
        for name, token in _STEM.items():
            layer, chs = layer_from_token(token, chs)
            self.add_module(name, layer)
        (n_a, scale_a), (n_b, scale_b), (n_c, scale_c) = stages
        self.mixed_5b = InceptionBranches(chs, _MIXED_5B)
        self.repeat = _residual_stage(self.mixed_5b.out_chs, _BLOCK35, n_a, scale_a)
        self.mixed_6a = InceptionBranches(self.mixed_5b.out_chs, _MIXED_6A)
        self.repeat_1 = _residual_stage(self.mixed_6a.out_chs, _BLOCK17, n_b, scale_b)
        self.mixed_7a = InceptionBranches(self.mixed_6a.out_chs, _MIXED_7A)
        self.repeat_2 = _residual_stage(self.mixed_7a.out_chs, _BLOCK8, n_c, scale_c)
        self.block8 = ScaledResidual(self.mixed_7a.out_chs, _BLOCK8, scale=1.0, relu=False)
        self.conv2d_7b, self.num_features = layer_from_token("c1536", self.mixed_7a.out_chs)
        self.classif = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in list(self.children())[:-1]:  # every module but the classifier, in forward order
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classif(global_avg_pool(self.forward_features(x)).flatten(1))


def _residual_stage(chs: int, branches: Mapping[str, str], repeats: int, scale: float) -> nn.Sequential:
    return nn.Sequential(*[ScaledResidual(chs, branches, scale) for _ in range(repeats)])


# TF-slim's network in the notation of _inception_blocks (legend there).
_STEM = {  # 299 -> 35x35x192
    "conv2d_1a": "c32_k3_s2_v", "conv2d_2a": "c32_k3_v", "conv2d_2b": "c64_k3", "maxpool_3a": "max",
    "conv2d_3b": "c80", "conv2d_4a": "c192_k3_v", "maxpool_5a": "max",
}
_MIXED_5B = numbered("c96", "c48 c64_k5", "c64 c96_k3 c96_k3", "avg c64")  # -> 35x35x320
_BLOCK35 = numbered("c32", "c32 c32_k3", "c32 c48_k3 c64_k3")  # Inception-ResNet-A
# Reduction-A (Figure 7, k, l, m, n = 256, 256, 384, 384) -> 17x17x1088
_MIXED_6A = numbered("c384_k3_s2_v", "c256 c256_k3 c384_k3_s2_v", "max")
_BLOCK17 = numbered("c192", "c128 c160_k1x7 c192_k7x1")  # Inception-ResNet-B
_MIXED_7A = numbered("c256 c384_k3_s2_v", "c256 c288_k3_s2_v", "c256 c288_k3 c320_k3_s2_v",
                     "max")  # Reduction-B -> 8x8x2080
_BLOCK8 = numbered("c192", "c192 c224_k1x3 c256_k3x1")  # Inception-ResNet-C

# (blocks, residual scale) of the A, B and C stages, TF-slim's constants; a tenth C block (``block8``)
# follows unscaled and without its ReLU.
_STAGES = {"inception_resnet_v2": ((10, 0.17), (20, 0.10), (9, 0.20))}


def _create_inception_resnet_v2(name: str, **overrides) -> InceptionResNetV2:
    return InceptionResNetV2(_STAGES[name], **overrides)


# timm's .tf_in1k weights: a centre crop of 299 from a bicubic resize to 299 / 0.8975.
@register_model(family="inception_resnet_v2", crop_pct=0.8975, reference="timm:inception_resnet_v2",
                reference_params=55_843_464, **TF_SLIM_SPEC)
def inception_resnet_v2(**overrides) -> InceptionResNetV2:
    return _create_inception_resnet_v2("inception_resnet_v2", **overrides)
