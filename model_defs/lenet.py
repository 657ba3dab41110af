"""LeNet-5, in its modern form.

Paper: "Gradient-Based Learning Applied to Document Recognition" (LeCun et al., Proc. IEEE 1998).

A 32x32 one-channel digit through C1 (6 maps, 5x5 conv -> 28x28), S2 (2x2 subsampling -> 14x14), C3
(16 maps, 5x5 -> 10x10), S4 (-> 5x5), C5 (120 units over the whole 5x5x16 map), F6 (84) and a
10-class output. There is no mainstream implementation (../shared/families.md: paper only), so the
bar is the exact count of the modern form: 61,706 parameters, every layer with a bias.

Modern, not original, and why:
- C3 connects every S2 map to every C3 map (2,416 parameters), not the paper's partial table (1,516).
- S2/S4 are plain 2x2 average pools: the paper's subsampling also scales each map by a trainable
  coefficient and adds a trainable bias (12 + 32 parameters), which the next conv's weights absorb.
- The output is a linear layer, not the paper's Euclidean RBF units with fixed 7x12 bitmaps.
- The activation is plain tanh, not the paper's scaled ``1.7159 tanh(2x/3)``.
Tanh and average pooling are kept rather than the ReLU + max pool of later re-implementations:
families.md's row names them, and they are what the paper computes.

Export notes: nothing in ../shared/families.md's pitfall glossary applies (Conv, Tanh, AveragePool,
Flatten, Gemm at opset 17). C5 is a fully connected layer over the flattened 5x5x16 map, so the
network takes 32x32 inputs only: the spec says ``fixed_input_size`` and any other ``--img-size`` is
rejected in one line. The weights shipped in ``model_defs/weights/lenet5.safetensors`` are trained on
scikit-learn's digits by ``model_defs/weights/train_lenet5.py`` (its docstring gives the held-out
accuracy); the spec's ``samples="digits"`` makes validation, INT8 calibration and drift use the
held-out and calibration digits (``calibration.digits``) instead of the photos.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._registry import register_model


class LeNet(nn.Module):
    """Two conv-tanh-avgpool stages, then fully connected tanh layers and a linear classifier."""

    def __init__(self, channels: tuple[int, ...], hidden: tuple[int, ...], kernel_size: int = 5,
                 feature_size: int = 5, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for in_ch, out_ch in zip((in_chans, *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size), nn.Tanh(), nn.AvgPool2d(2)]
        self.features = nn.Sequential(*layers)
        dense: list[nn.Module] = []
        for in_features, out_features in zip((channels[-1] * feature_size ** 2, *hidden[:-1]), hidden, strict=True):
            dense += [nn.Linear(in_features, out_features), nn.Tanh()]
        self.classifier = nn.Sequential(*dense, nn.Linear(hidden[-1], num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.forward_features(x), 1))


def _create_lenet(variant: str, **overrides) -> LeNet:
    return LeNet(**{**_CFGS[variant], **overrides})


# channels: C1, C3 maps; hidden: C5, F6 units (5x5 kernels, 2x2 pools, 32x32 input -> 5x5 maps).
_CFGS = {
    "lenet5": dict(channels=(6, 16), hidden=(120, 84)),
}


def lenet5_checkpoint() -> Path:
    """The shipped digits checkpoint of ``lenet5`` (``bbexport ... --weights`` takes this path)."""
    return Path(__file__).parent / "weights" / "lenet5.safetensors"


_PAPER = "LeCun et al., Gradient-Based Learning Applied to Document Recognition, Proc. IEEE 1998"


# Inputs standardised like the paper's (mean ~0, variance ~1): the pixel mean and standard deviation
# of the training digits (calibration.digits, ink bright on black, 0-1 scale). No crop: a digit
# fills its image.
@register_model(family="lenet", paper=_PAPER, input_size=(1, 32, 32), mean=(0.306,), std=(0.323,), crop_pct=1.0,
                num_classes=10, reference_params=61_706, fixed_input_size=True, samples="digits")
def lenet5(**overrides) -> LeNet:
    return _create_lenet("lenet5", **overrides)
