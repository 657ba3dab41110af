"""Branch notation and the multi-branch block shared by Inception-v4 and Inception-ResNet-v2.

Both networks (Szegedy et al., AAAI 2017; the TF-slim code timm ported) are chains of blocks whose
branches run side by side on one input and are concatenated over channels. A branch is written as a
string of space-separated layers:

    c<out>[_k<k>|_k<kh>x<kw>][_s<stride>][_v]   conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU
        out   output channels
        k     kernel, default 1; kh x kw for the factorized 1x7 / 7x1 and 1x3 / 3x1 convs
        s     stride, default 1
        v     TF "VALID": no padding (otherwise k // 2 per axis, which is TF "SAME" at stride 1)
    max   3x3 max pool, stride 2, no padding (the reduction blocks' pooling branch)
    avg   3x3 average pool, stride 1, padding 1 left out of the average (count_include_pad=False)

e.g. ``"c64 c96_k3_v"``: a 1x1 conv to 64 channels, then a 3x3 VALID conv to 96. A one-layer branch is
that layer, a longer one an ``nn.Sequential``: the module names of timm's ``ConvNormAct`` branches, so
its state_dicts load as they are.

Every stride-2 layer is a VALID 3x3 (conv or max pool), so all branches of a block agree on the output
size, floor((n - 3) / 2) + 1, at any input size: neither network needs the input to be a multiple of
anything, only large enough for the last reduction to leave one pixel. Both take 299 px through the
same VALID sizes (149, 147, 73, 71, 35, 17, 8), so both need 75 px at least (:data:`TF_SLIM_SPEC`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

from ._layers import ConvNormAct
from ._registry import INCEPTION_MEAN, INCEPTION_STD

BN_EPS = 1e-3  # TF's epsilon, kept by the TF-slim ports
# Deployment facts both TF-slim ports share (timm's .tf_in1k weights): the paper, inputs in [-1, 1]
# at 299 px after a bicubic resize, and the size rule above (any side, 75 px at least).
TF_SLIM_SPEC = dict(
    paper=("Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual Connections on "
           "Learning, AAAI 2017"),
    input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic", size_divisor=1,
    min_size=75,
)
_CONV_TOKEN = re.compile(r"c(\d+)(?:_k(\d+)(?:x(\d+))?)?(?:_s(\d+))?(_v)?")


def layer_from_token(token: str, in_chs: int) -> tuple[nn.Module, int]:
    """One layer of the notation above and its output channels."""
    if token == "max":
        return nn.MaxPool2d(3, stride=2), in_chs
    if token == "avg":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), in_chs
    match = _CONV_TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"bad Inception layer token {token!r}: expected 'max', 'avg' or "
                         "c<out>[_k<k>|_k<kh>x<kw>][_s<stride>][_v]")
    out_chs, kh, kw, stride, valid = match.groups()
    kernel = (int(kh or 1), int(kw or kh or 1))
    padding = 0 if valid else (kernel[0] // 2, kernel[1] // 2)
    conv = ConvNormAct(in_chs, int(out_chs), kernel, int(stride or 1), padding=padding, eps=BN_EPS)
    return conv, int(out_chs)


def branch_from_string(branch: str, in_chs: int) -> tuple[nn.Module, int]:
    """A branch (space-separated tokens) and its output channels."""
    layers = []
    for token in branch.split():
        layer, in_chs = layer_from_token(token, in_chs)
        layers.append(layer)
    return (layers[0] if len(layers) == 1 else nn.Sequential(*layers)), in_chs


def numbered(*branches: str) -> dict[str, str]:
    """Branches under timm's default names ``branch0``, ``branch1``, ..."""
    return {f"branch{i}": branch for i, branch in enumerate(branches)}


class InceptionBranches(nn.Module):
    """Named branches on one input, concatenated over channels in the order given (subclasses may
    add modules of their own after the branches)."""

    def __init__(self, in_chs: int, branches: Mapping[str, str]):
        super().__init__()
        self.branch_names = tuple(branches)
        self.out_chs = 0
        for name, branch in branches.items():
            layer, chs = branch_from_string(branch, in_chs)
            self.add_module(name, layer)
            self.out_chs += chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, name)(x) for name in self.branch_names], 1)
