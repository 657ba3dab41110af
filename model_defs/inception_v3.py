"""Inception-v3.

Paper: "Rethinking the Inception Architecture for Computer Vision" (Szegedy et al., CVPR 2016).

A stem of 3x3 convs and two max pools (299 -> 35x35x192), three Inception-A blocks (Figure 5), a grid
reduction (Mixed_6a, -> 17x17x768), four Inception-C blocks with the 7x7 factorized into 1x7 and 7x1
(Figure 6), a second reduction (Mixed_7a, -> 8x8x1280), two Inception-E blocks whose 3x3 branches fork
into a 1x3 and a 3x1 (Figure 7), global average pooling and a linear classifier. Every conv is followed
by BatchNorm (TF's eps 1e-3) and ReLU.

Module names are timm's ``inception_v3`` and torchvision's ``inception_v3`` (``Conv2d_1a_3x3.conv``,
``Mixed_6b.branch7x7dbl_3.bn``, ``fc``), which agree on every key. The layout here is timm's, without the
auxiliary classifier (23,834,568 parameters), so timm's checkpoints load as they are. torchvision's
(27,161,264 parameters) adds ``AuxLogits``, which runs in training only; the family's remap drops it.

Export notes (../shared/families.md):
- P-TFIN: torchvision's pretrained builder sets ``transform_input=True``, which re-normalises an
  ImageNet-normalised input inside the graph, ``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel, i.e.
  ``(photo - 0.5) / 0.5``. The spec says mean = std = 0.5 (timm's eval of the same checkpoint,
  ``inception_v3.tv_in1k``, and of the TF ports) and the graph has no transform: a torchvision
  checkpoint gives torchvision's logits for the same photo, with no Gather/Mul/Add/Concat at the input.
- The 3x3 average pools of the A/C/E blocks count their padding (``count_include_pad=True``, ONNX
  AveragePool ``count_include_pad=1``) as torchvision and timm do, though TF-slim left it out.
- Input sizes: every stride-2 layer is a 3x3 without padding, and the branches of a reduction all
  give floor((n - 3) / 2) + 1, so any size works that leaves Mixed_7a one pixel: 75 px and up
  (``size_divisor=1``, ``min_size=75``; 74 leaves it none). Smaller sizes are a one-line error. The head
  pools globally (GlobalAveragePool), so no pool bin depends on the resolution (no P-ADAPT).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import ConvNormAct, FlatClassifier, remap_without
from ._registry import INCEPTION_MEAN, INCEPTION_STD, register_model

_conv = partial(ConvNormAct, eps=1e-3)  # TF's epsilon, kept by both ports

# One conv of a Mixed block: (timm name, out channels, kernel, stride); a kernel (h, w) is 1x7-style.
# A stride-1 conv keeps the size (padding k // 2 per axis), a stride-2 one has none (TF "VALID").
Conv = tuple[str, int, int | tuple[int, int], int]


@dataclass(frozen=True)
class Branch:
    convs: tuple[Conv, ...]  # a chain
    fork: tuple[Conv, ...] = ()  # convs side by side on the chain's output, concatenated (Inception-E)


@dataclass(frozen=True)
class MixedConfig:
    branches: tuple[Branch, ...]
    pool: str  # the last branch: "avg" = 3x3/1 average pool -> 1x1 conv ``branch_pool``; "max" = 3x3/2 max pool
    pool_features: int = 0  # the ``branch_pool`` conv's output channels ("avg" only)


class MixedBlock(nn.Module):
    """Branches on one input, concatenated over channels, the pool branch last. The convs are flat
    attributes under timm's names (``branch7x7_2``), so the chains are kept as name tuples."""

    def __init__(self, in_chs: int, cfg: MixedConfig):
        super().__init__()
        if cfg.pool not in ("avg", "max"):
            raise ValueError(f"unknown Mixed-block pool {cfg.pool!r} (expected 'avg' or 'max')")
        self.pool = cfg.pool
        self.chains: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
        self.out_chs = 0
        for branch in cfg.branches:
            chs = self._add_convs(branch.convs, in_chs)
            forked = [self._add_convs((conv,), chs) for conv in branch.fork]
            self.chains.append((tuple(c[0] for c in branch.convs), tuple(c[0] for c in branch.fork)))
            self.out_chs += sum(forked) if forked else chs
        if cfg.pool == "avg":
            self.branch_pool = _conv(in_chs, cfg.pool_features, 1)
        self.out_chs += cfg.pool_features if cfg.pool == "avg" else in_chs

    def _add_convs(self, convs: tuple[Conv, ...], in_chs: int) -> int:
        for name, out_chs, kernel, stride in convs:
            self.add_module(name, _conv(in_chs, out_chs, kernel, stride, padding=None if stride == 1 else 0))
            in_chs = out_chs
        return in_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for chain, fork in self.chains:
            y = x
            for name in chain:
                y = getattr(self, name)(y)
            outputs += [getattr(self, name)(y) for name in fork] or [y]
        if self.pool == "avg":
            outputs.append(self.branch_pool(F.avg_pool2d(x, 3, 1, 1)))  # count_include_pad=True
        else:
            outputs.append(F.max_pool2d(x, 3, 2))
        return torch.cat(outputs, 1)


class InceptionV3(FlatClassifier):
    """The stem, then the Mixed blocks (``Mixed_5b`` ... ``Mixed_7c``) in the order given."""

    def __init__(self, blocks: tuple[tuple[str, MixedConfig], ...], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        # TF-slim's stem: VALID 3x3 convs but Conv2d_2b, two VALID 3x3/2 max pools.
        self.Conv2d_1a_3x3 = _conv(in_chans, 32, 3, stride=2, padding=0)
        self.Conv2d_2a_3x3 = _conv(32, 32, 3, padding=0)
        self.Conv2d_2b_3x3 = _conv(32, 64, 3)
        self.Pool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = _conv(64, 80, 1)
        self.Conv2d_4a_3x3 = _conv(80, 192, 3, padding=0)
        self.Pool2 = nn.MaxPool2d(3, 2)
        chs = 192
        for name, cfg in blocks:
            block = MixedBlock(chs, cfg)
            self.add_module(name, block)
            chs = block.out_chs
        self.num_features = chs
        self.fc = nn.Linear(chs, num_classes)


def _inception_a(pool_features: int) -> MixedConfig:  # 35x35, Figure 5
    return MixedConfig((
        Branch((("branch1x1", 64, 1, 1),)),
        Branch((("branch5x5_1", 48, 1, 1), ("branch5x5_2", 64, 5, 1))),
        Branch((("branch3x3dbl_1", 64, 1, 1), ("branch3x3dbl_2", 96, 3, 1), ("branch3x3dbl_3", 96, 3, 1))),
    ), "avg", pool_features)


def _inception_b() -> MixedConfig:  # 35 -> 17, Figure 10
    return MixedConfig((
        Branch((("branch3x3", 384, 3, 2),)),
        Branch((("branch3x3dbl_1", 64, 1, 1), ("branch3x3dbl_2", 96, 3, 1), ("branch3x3dbl_3", 96, 3, 2))),
    ), "max")


def _inception_c(c7: int) -> MixedConfig:  # 17x17, Figure 6 with n = 7
    return MixedConfig((
        Branch((("branch1x1", 192, 1, 1),)),
        Branch((("branch7x7_1", c7, 1, 1), ("branch7x7_2", c7, (1, 7), 1), ("branch7x7_3", 192, (7, 1), 1))),
        Branch((("branch7x7dbl_1", c7, 1, 1), ("branch7x7dbl_2", c7, (7, 1), 1), ("branch7x7dbl_3", c7, (1, 7), 1),
                ("branch7x7dbl_4", c7, (7, 1), 1), ("branch7x7dbl_5", 192, (1, 7), 1))),
    ), "avg", 192)


def _inception_d() -> MixedConfig:  # 17 -> 8
    return MixedConfig((
        Branch((("branch3x3_1", 192, 1, 1), ("branch3x3_2", 320, 3, 2))),
        Branch((("branch7x7x3_1", 192, 1, 1), ("branch7x7x3_2", 192, (1, 7), 1), ("branch7x7x3_3", 192, (7, 1), 1),
                ("branch7x7x3_4", 192, 3, 2))),
    ), "max")


def _inception_e() -> MixedConfig:  # 8x8, Figure 7
    return MixedConfig((
        Branch((("branch1x1", 320, 1, 1),)),
        Branch((("branch3x3_1", 384, 1, 1),), (("branch3x3_2a", 384, (1, 3), 1), ("branch3x3_2b", 384, (3, 1), 1))),
        Branch((("branch3x3dbl_1", 448, 1, 1), ("branch3x3dbl_2", 384, 3, 1)),
               (("branch3x3dbl_3a", 384, (1, 3), 1), ("branch3x3dbl_3b", 384, (3, 1), 1))),
    ), "avg", 192)


def _create_inception_v3(name: str, **overrides) -> InceptionV3:
    return InceptionV3(_BLOCKS[name], **overrides)


_BLOCKS = {
    "inception_v3": (
        ("Mixed_5b", _inception_a(32)), ("Mixed_5c", _inception_a(64)), ("Mixed_5d", _inception_a(64)),
        ("Mixed_6a", _inception_b()),
        ("Mixed_6b", _inception_c(128)), ("Mixed_6c", _inception_c(160)), ("Mixed_6d", _inception_c(160)),
        ("Mixed_6e", _inception_c(192)),
        ("Mixed_7a", _inception_d()),
        ("Mixed_7b", _inception_e()), ("Mixed_7c", _inception_e()),
    ),
}

_PAPER = "Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016"


# timm's eval of every inception_v3 checkpoint it ships (.tv_in1k included): bicubic resize to
# 299 / 0.875, centre crop 299, inputs in [-1, 1] (P-TFIN above).
@register_model(family="inception_v3", paper=_PAPER, input_size=(3, 299, 299), mean=INCEPTION_MEAN,
                std=INCEPTION_STD, interpolation="bicubic", crop_pct=0.875, reference="timm:inception_v3",
                reference_params=23_834_568, size_divisor=1, min_size=75,
                remap=remap_without("AuxLogits."))  # torchvision's aux classifier: training only
def inception_v3(**overrides) -> InceptionV3:
    return _create_inception_v3("inception_v3", **overrides)
