"""PeleeNet.

Paper: "Pelee: A Real-Time Object Detection System on Mobile Devices" (Wang, Li and Ling, NeurIPS 2018).

A DenseNet built for mobile devices. Its stem block runs a 3x3/2 conv (32), then two branches side by
side, a 1x1 (16) -> 3x3/2 (32) conv branch and a 2x2/2 max pool, concatenates them and fuses them with
a 1x1 (32). Each two-way dense layer splits the growth rate k = 32 in two: a 1x1 bottleneck -> 3x3
branch (k/2) and a 1x1 bottleneck -> 3x3 -> 3x3 branch (k/2, a 5x5 field), appended to its input. Four
dense blocks of 3, 4, 8 and 6 layers with bottleneck widths 1, 2, 4, 4 (``inter = int(k/2 * width / 4)
* 4`` channels: 16, 32, 64, 64) end at 128, 256, 512 and 704 channels; after each, a transition 1x1
conv keeps the width, and after all but the last a 2x2/2 average pool halves the resolution. Every
conv is conv-BN-ReLU without bias ("BasicConv2d"). The head is a global average pool and a Linear.

Neither timm nor torchvision defines it. The architecture follows the authors' PyTorch code,
Robert-JunWang/PeleeNet ``peleenet.py``: 2,802,248 parameters, as counted from that code
(../shared/families.md). Module names are theirs (``features.stemblock.stem2a``,
``features.denseblock3.denselayer5.branch2c``, ``features.transition4``, ``classifier``) with one
difference: the shared ``ConvNormAct`` calls its BatchNorm ``bn`` where their ``BasicConv2d`` says
``norm``; :func:`remap_peleenet` renames it, so their checkpoints (``{"state_dict": ...}`` saved from
DataParallel: the exporter unwraps it and strips ``module.``) load strictly through ``--weights``.

Export notes (../shared/families.md, PeleeNet row):
- The authors' head is ``F.avg_pool2d(features, kernel_size=(features.size(2), features.size(3)))``:
  under tracing the kernel becomes a constant of the traced map (7x7 at 224), so a graph with dynamic
  height and width averages a 7x7 corner of a larger map, or fails on a smaller one; the same
  resolution-baking as P-ADAPT. Here the head is a global pool (``adaptive_avg_pool2d(x, 1)``, ONNX
  GlobalAveragePool): the same values at the traced size, and right at every other.
- The stem concatenates a 3x3/2 conv with padding 1 (``ceil(n / 2)`` rows) and a 2x2/2 max pool in floor
  mode (``floor(n / 2)``): they agree only when the stem conv's map is even. So sides are multiples of 4
  (``size_divisor=4``), from 32 on (``min_size``: a 1x1 map after the third transition pool). All pools
  are floor mode (P-CEIL does not apply); the transition pools are plain AveragePools of kernel 2.
- Dense concatenation, as in DenseNet: each layer returns ``cat([x, branch1, branch2])``, one Concat
  of three inputs; the stem's Concat puts the pool first. BN follows every conv, so all of them fold.
- Training-only parts are left out: the dropout (p = 0.05) before the classifier, the identity at
  eval. So is the authors' cap on the bottleneck width (``inter > in / 2`` -> ``int(in / 8) * 4``), which
  fires for no layer of the published configuration (the first layer of each block has 32, 128, 256
  and 512 inputs against 16, 32, 64 and 64 bottleneck channels).

Preprocessing is the authors' eval transform (``main.py``, ``eval.py``): torchvision's bilinear resize of
the short side to 256, center crop 224, RGB in 0-1 with ImageNet mean/std. Their Caffe model takes BGR;
the PyTorch weights this definition loads take RGB.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import ConvNormAct, global_avg_pool
from ._registry import StateDict, register_model


class StemBlock(nn.Module):
    """3x3/2 conv, then [1x1 -> 3x3/2 conv] beside a 2x2/2 max pool, concatenated (pool first), then a
    1x1 conv back to ``out_chs``: a 4x reduction that keeps more than a strided conv alone."""

    def __init__(self, in_chans: int, out_chs: int):
        super().__init__()
        self.stem1 = ConvNormAct(in_chans, out_chs, 3, stride=2)
        self.stem2a = ConvNormAct(out_chs, out_chs // 2, 1)
        self.stem2b = ConvNormAct(out_chs // 2, out_chs, 3, stride=2)
        self.stem3 = ConvNormAct(2 * out_chs, out_chs, 1)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem1(x)
        return self.stem3(torch.cat([self.pool(x), self.stem2b(self.stem2a(x))], 1))


class TwoWayDenseLayer(nn.Module):
    """Two branches of ``growth_rate / 2`` channels each, a 3x3 and two stacked 3x3 (a 5x5 field), each
    behind its own 1x1 bottleneck, appended to the input."""

    def __init__(self, in_chs: int, growth_rate: int, bottleneck_width: int):
        super().__init__()
        branch_chs = growth_rate // 2
        inter_chs = branch_chs * bottleneck_width // 4 * 4
        self.branch1a = ConvNormAct(in_chs, inter_chs, 1)
        self.branch1b = ConvNormAct(inter_chs, branch_chs, 3)
        self.branch2a = ConvNormAct(in_chs, inter_chs, 1)
        self.branch2b = ConvNormAct(inter_chs, branch_chs, 3)
        self.branch2c = ConvNormAct(branch_chs, branch_chs, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1 = self.branch1b(self.branch1a(x))
        branch2 = self.branch2c(self.branch2b(self.branch2a(x)))
        return torch.cat([x, branch1, branch2], 1)


def _dense_block(num_layers: int, in_chs: int, growth_rate: int, bottleneck_width: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        (f"denselayer{i + 1}", TwoWayDenseLayer(in_chs + i * growth_rate, growth_rate, bottleneck_width))
        for i in range(num_layers)
    ))


class PeleeNet(nn.Module):
    def __init__(self, growth_rate: int, block_config: tuple[int, ...], bottleneck_widths: tuple[int, ...],
                 num_init_features: int, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([("stemblock", StemBlock(in_chans, num_init_features))]))
        chs = num_init_features
        for i, (num_layers, width) in enumerate(zip(block_config, bottleneck_widths, strict=True)):
            self.features.add_module(f"denseblock{i + 1}", _dense_block(num_layers, chs, growth_rate, width))
            chs += num_layers * growth_rate
            self.features.add_module(f"transition{i + 1}", ConvNormAct(chs, chs, 1))
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}_pool", nn.AvgPool2d(2, 2))
        self.num_features = chs
        self.classifier = nn.Linear(chs, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors': convs normal with std sqrt(2 / (k*k*out)) (Kaiming, fan-out), the Linear normal
        with std 0.01 and a zero bias; BatchNorm's own defaults (weight 1, bias 0) are theirs too."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A global pool where the authors bake the traced map size into avg_pool2d's kernel.
        return self.classifier(global_avg_pool(self.forward_features(x)).flatten(1))


# The authors' BasicConv2d names its BatchNorm ``norm``; ConvNormAct names it ``bn``.
_AUTHORS_NORM = re.compile(r"\.norm\.")


def remap_peleenet(state: StateDict) -> dict[str, torch.Tensor]:
    """The authors' keys (``features.stemblock.stem1.norm.running_var``) -> ours (``...stem1.bn.running_var``);
    every other key is the same in both."""
    return {_AUTHORS_NORM.sub(".bn.", key): value for key, value in state.items()}


@dataclass(frozen=True)
class PeleeNetConfig:
    growth_rate: int = 32  # k: channels each two-way dense layer adds (k/2 per branch)
    block_config: tuple[int, int, int, int] = (3, 4, 8, 6)  # dense layers per block
    bottleneck_widths: tuple[int, int, int, int] = (1, 2, 4, 4)  # per block: 1x1 width = k/2 * this
    num_init_features: int = 32  # stem width


_CONFIGS = {
    "peleenet": PeleeNetConfig(),
}


def _create_peleenet(name: str, **overrides) -> PeleeNet:
    cfg = _CONFIGS[name]
    return PeleeNet(cfg.growth_rate, cfg.block_config, cfg.bottleneck_widths, cfg.num_init_features, **overrides)


_PAPER = "Wang, Li and Ling, Pelee: A Real-Time Object Detection System on Mobile Devices, NeurIPS 2018"


# The authors' eval transform (bilinear 256 resize, 224 crop, ImageNet mean/std) is the spec's default.
@register_model(family="peleenet", paper=_PAPER, reference_params=2_802_248, size_divisor=4, min_size=32,
                remap=remap_peleenet)
def peleenet(**overrides) -> PeleeNet:
    return _create_peleenet("peleenet", **overrides)
