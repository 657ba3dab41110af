"""MobileNetV1.

Paper: "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
(Howard et al., 2017).

Thirteen depthwise-separable blocks (dw 3x3 -> BN-ReLU6 -> pw 1x1 -> BN-ReLU6, never a residual) on
a stride-2 stem, global pooling straight into the classifier (no 1x1 head conv). Built on the shared
MBConv skeleton of ``_efficientnet_blocks`` with timm's keys (``mobilenetv1_100``); torchvision has no
MobileNetV1.
"""

from __future__ import annotations

from torch import nn

from ._efficientnet_blocks import EfficientNet, decode_arch
from ._registry import INCEPTION_MEAN, INCEPTION_STD, register_model

# The paper's Table 1 as block strings (legend in _efficientnet_blocks): dsa = ds with a pw activation.
_ARCH = (
    ("dsa_r1_k3_s1_c64",),
    ("dsa_r2_k3_s2_c128",),
    ("dsa_r2_k3_s2_c256",),
    ("dsa_r6_k3_s2_c512",),
    ("dsa_r2_k3_s2_c1024",),
)


def _create_mobilenetv1(width_multiplier: float, **overrides) -> EfficientNet:
    return EfficientNet(decode_arch(_ARCH), stem_size=32, num_features=0, width_multiplier=width_multiplier,
                        act_layer=nn.ReLU6, **overrides)


_PAPER = ("Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
          "Applications, arXiv 2017")


# timm's .ra4_e3600_r224_in1k weights: inputs in [-1, 1], bicubic, evaluated at the training size.
@register_model(family="mobilenetv1", paper=_PAPER, interpolation="bicubic", mean=INCEPTION_MEAN,
                std=INCEPTION_STD, reference="timm:mobilenetv1_100", reference_params=4_231_976)
def mobilenetv1_100(**overrides) -> EfficientNet:
    return _create_mobilenetv1(1.0, **overrides)
