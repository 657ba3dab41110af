"""Res2Net and Res2NeXt.

Paper: "Res2Net: A New Multi-scale Backbone Architecture" (Gao et al., IEEE TPAMI, early access 2019;
arXiv:1904.01169).

A Res2Net bottleneck replaces the 3x3 conv of a ResNet bottleneck by a hierarchy of smaller ones: the
first 1x1 conv makes ``scale`` chunks of ``width`` channels; chunk 0 goes through a 3x3 conv, chunk i
(1 <= i < scale - 1) is added to the previous 3x3's output and goes through its own 3x3, and the last
chunk passes untouched, so the receptive field grows from chunk to chunk ("26w_4s": width 26 at the first
stage, 4 scales). Res2NeXt groups each 3x3 into ``cardinality`` paths. The trunk is
:class:`model_defs.resnet.ResNet` with :class:`Bottle2neck` as its block: torchvision-style 7x7 stem,
stride on the 3x3s, 1x1 strided shortcut projections, so the module names are timm's (``conv1``,
``layer1.0.convs.2``, ``layer1.0.bns.2``, ``fc``) and its checkpoints load without a remap.

Export notes (../shared/families.md, Res2Net row):
- The chunks come from one ``split`` by ``width``, a Python int: one ONNX Split with a constant sizes
  input and ``scale`` outputs per block, nothing read from the traced shape (the official ResNeSt's
  ``split`` by a tensor size is the P-5D tracing bug). No chunk is ever reshaped, so the batch stays
  dynamic; ``tests/test_family_res2net.py`` checks the Splits and ONNX Runtime at batch 1 and 3.
- The first block of every stage (it strides or projects its shortcut) sums no chunks: each 3x3 takes
  its own chunk, at the block's stride, and the last chunk goes through ``AvgPool2d(3, stride, 1)`` to
  match their resolution; at layer1's stride 1 too, as in timm. Its count_include_pad stays True, as
  timm's (and the authors' weights) have it: border means count the zero padding, ONNX AveragePool
  ``count_include_pad=1``. The wrong setting changes only border pixels and passes a shape check, so
  parity runs at 64 px, where most of a 4x4 or 2x2 map is border.
- P-ADAPT does not apply: the head is a global average pool, so every multiple of 32 exports.
- Initialisation matters to the seeded random weights that drift is measured on. ResNet and timm start
  each residual branch's last BN at zero: every branch would add nothing, and drift would see only the
  stem, the shortcut projections and the head, none of the Split, the sums or the pool. Here that BN
  starts at 1/sqrt(blocks), as in senet.py (GPT-2's depth-scaled residual init): the branches are live
  and the network stays well-conditioned (res2net50_26w_4s at 224 on the validator's noise: ONNX Runtime
  7.7e-7 of the logit scale off PyTorch, 5.7e-7 with zero-init, 3.1e-6 with unit BNs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_model
from .resnet import ResNet


class Bottle2neck(nn.Module):
    """1x1 conv to ``scale`` chunks -> hierarchical 3x3s (grouped by ``groups``, Res2NeXt's cardinality)
    -> concat -> 1x1 conv, plus the shortcut. ``base_width`` is the width of one chunk per 64 planes."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 26, *, scale: int = 4):
        super().__init__()
        if scale < 2:
            raise ValueError(f"Bottle2neck needs scale >= 2 (chunks to split into); got {scale}")
        self.width = math.floor(planes * base_width / 64) * groups  # a Python int: one constant Split
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, self.width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(self.width, self.width, 3, stride, 1, groups=groups, bias=False)
                                   for _ in range(scale - 1))
        self.bns = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(scale - 1))
        # A stage's first block neither sums chunks nor passes the last one untouched (module docstring).
        first = stride > 1 or downsample is not None
        self.sums_chunks = not first
        self.pool = nn.AvgPool2d(3, stride, 1) if first else nn.Identity()
        self.conv3 = nn.Conv2d(self.width * scale, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        chunks = self.relu(self.bn1(self.conv1(x))).split(self.width, dim=1)
        outs = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            branch_in = chunks[i] + outs[-1] if i > 0 and self.sums_chunks else chunks[i]
            outs.append(self.relu(bn(conv(branch_in))))
        outs.append(self.pool(chunks[-1]))
        x = self.bn3(self.conv3(torch.cat(outs, dim=1)))
        return self.relu(x + shortcut)


def _create_res2net(name: str, **overrides) -> ResNet:
    cfg = _CONFIGS[name]
    model = ResNet(Bottle2neck, cfg.layers, groups=cfg.cardinality, base_width=cfg.base_width,
                   block_args={"scale": cfg.scale}, **overrides)
    # Bottle2neck has no zero_init_last hook: live branches, depth-scaled (module docstring).
    for block in model.modules():
        if isinstance(block, Bottle2neck):
            nn.init.constant_(block.bn3.weight, sum(cfg.layers) ** -0.5)
    return model


@dataclass(frozen=True)
class Res2NetConfig:
    layers: tuple[int, int, int, int]  # blocks per stage
    base_width: int  # channels of one chunk at the first stage, per 3x3 group ("26w")
    scale: int  # chunks per block ("4s")
    cardinality: int = 1  # groups of each 3x3 (Res2NeXt)


_CONFIGS = {
    "res2net50_26w_4s": Res2NetConfig((3, 4, 6, 3), 26, 4),
    "res2net50_48w_2s": Res2NetConfig((3, 4, 6, 3), 48, 2),
    "res2net50_14w_8s": Res2NetConfig((3, 4, 6, 3), 14, 8),
    "res2net50_26w_6s": Res2NetConfig((3, 4, 6, 3), 26, 6),
    "res2net50_26w_8s": Res2NetConfig((3, 4, 6, 3), 26, 8),
    "res2net101_26w_4s": Res2NetConfig((3, 4, 23, 3), 26, 4),
    "res2next50": Res2NetConfig((3, 4, 6, 3), 4, 4, cardinality=8),
}

_PAPER = "Gao et al., Res2Net: A New Multi-scale Backbone Architecture, IEEE TPAMI 2019 (arXiv:1904.01169)"


@register_model(family="res2net", paper=_PAPER, reference="timm:res2net50_26w_4s", reference_params=25_699_120)
def res2net50_26w_4s(**overrides) -> ResNet:
    return _create_res2net("res2net50_26w_4s", **overrides)


@register_model(family="res2net", paper=_PAPER, reference="timm:res2net50_48w_2s", reference_params=25_287_304)
def res2net50_48w_2s(**overrides) -> ResNet:
    return _create_res2net("res2net50_48w_2s", **overrides)


@register_model(family="res2net", paper=_PAPER, reference="timm:res2net50_14w_8s", reference_params=25_059_816)
def res2net50_14w_8s(**overrides) -> ResNet:
    return _create_res2net("res2net50_14w_8s", **overrides)


@register_model(family="res2net", paper=_PAPER, reference="timm:res2net50_26w_6s", reference_params=37_051_448)
def res2net50_26w_6s(**overrides) -> ResNet:
    return _create_res2net("res2net50_26w_6s", **overrides)


@register_model(family="res2net", paper=_PAPER, reference="timm:res2net50_26w_8s", reference_params=48_403_776)
def res2net50_26w_8s(**overrides) -> ResNet:
    return _create_res2net("res2net50_26w_8s", **overrides)


@register_model(family="res2net", paper=_PAPER, reference="timm:res2net101_26w_4s",
                reference_params=45_206_688)
def res2net101_26w_4s(**overrides) -> ResNet:
    return _create_res2net("res2net101_26w_4s", **overrides)


@register_model(family="res2net", paper=_PAPER, reference="timm:res2next50", reference_params=24_671_464)
def res2next50(**overrides) -> ResNet:
    return _create_res2net("res2next50", **overrides)
