"""Darknet-19 and Darknet-53.

Papers: "YOLO9000: Better, Faster, Stronger" (Redmon & Farhadi, CVPR 2017), Darknet-19;
"YOLOv3: An Incremental Improvement" (Redmon & Farhadi, arXiv 2018), Darknet-53.

Both are a 3x3 stem conv at 32 channels and five stages that each halve the resolution and double the
width (64 ... 1024); every conv is conv (no bias) -> BatchNorm -> LeakyReLU, padded ``k // 2``.
- Darknet-19 (pjreddie/darknet ``cfg/darknet19.cfg``) downsamples with a 2x2 max-pool and stacks plain
  convs alternating 3x3 and 1x1 bottlenecks. Its classifier is a 1x1 conv *with* bias and no BN, applied
  at every position before the global average (the cfg's order: conv, avgpool, softmax). No library
  defines it, so the bar is the cfg's exact count, 20,842,376 (conv weights + BN gamma/beta + that bias),
  and 2.79 GMACs at 224 (the paper's 5.58 B ops). The paper evaluates at 224, the default here; the cfg's
  ``[net]`` 256 is the size it was trained at (random crops 128-448), ``darknet19_448.cfg`` a fine-tune
  at 448. Both are plain ``--img-size`` choices. Darknet feeds RGB pixels in [0, 1] with no mean or std
  and evaluates a short-side resize to the net size with a centre crop: the spec says so.
- Darknet-53 is timm's ``darknet53`` (built in its CSPNet framework): module names are timm's
  (``stem.conv1``, ``stages.2.conv_down``, ``stages.2.blocks.7.conv2``, ``head.fc``), so its checkpoints
  load without a remap. Stages downsample with a stride-2 3x3 conv, then residual blocks of a 1x1 to half
  width and a 3x3 back, added with no activation after the sum (the cfg's linear ``[shortcut]``).

Export notes (families.md rows; no glossary P-code applies):
- LeakyReLU becomes one ONNX ``LeakyRelu``. The slopes differ on purpose: darknet's ``leaky`` is 0.1, but
  timm builds darknet53 with PyTorch's default 0.01 and its weights were trained so; each variant keeps its
  own reference's slope.
- Darknet's max-pool pads only at the end (``padding = size - 1``), which matters only for odd sizes:
  every pooled map is even at multiples of 32 (``size_divisor``), where it is ``MaxPool2d(2, 2)`` exactly.
- Global pooling is ``GlobalAveragePool`` at any size (no P-ADAPT); the softmax of the cfg is left out,
  so the graph outputs logits like every other variant.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import ClassifierHead, ConvNormAct, global_avg_pool
from ._registry import register_model

STEM_CHS = 32
STAGE_CHS = (64, 128, 256, 512, 1024)


class PoolStage(nn.Module):
    """Darknet-19 stage: 2x2 max-pool, then conv-BN-leaky layers alternating a 3x3 at ``out_chs`` and a
    1x1 bottleneck at half of it; the depth is odd, so the stage ends on a 3x3 at ``out_chs``."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, act_layer: Callable[[], nn.Module]):
        super().__init__()
        if depth % 2 == 0:
            raise ValueError(f"a Darknet-19 stage alternates 3x3 and 1x1 convs from a 3x3: odd depth, got {depth}")
        self.pool = nn.MaxPool2d(2, 2)
        layers, prev_chs = [], in_chs
        for i in range(depth):
            chs, kernel_size = (out_chs, 3) if i % 2 == 0 else (out_chs // 2, 1)
            layers.append(ConvNormAct(prev_chs, chs, kernel_size, act_layer=act_layer))
            prev_chs = chs
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pool(x))


class DarkBlock(nn.Module):
    """Darknet-53 residual block: 1x1 conv to half width, 3x3 conv back, plus the input."""

    def __init__(self, chs: int, act_layer: Callable[[], nn.Module]):
        super().__init__()
        self.conv1 = ConvNormAct(chs, chs // 2, 1, act_layer=act_layer)
        self.conv2 = ConvNormAct(chs // 2, chs, 3, act_layer=act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class DarkStage(nn.Module):
    """Darknet-53 stage: stride-2 3x3 conv to ``out_chs``, then ``depth`` residual blocks."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, act_layer: Callable[[], nn.Module]):
        super().__init__()
        self.conv_down = ConvNormAct(in_chs, out_chs, 3, stride=2, act_layer=act_layer)
        self.blocks = nn.Sequential(*(DarkBlock(out_chs, act_layer) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.conv_down(x))


class ConvPoolHead(nn.Module):
    """Darknet-19's classifier: a biased 1x1 conv at every position, then the global average. The same
    function as pool-then-linear; kept in the cfg's order so darknet weights keep their (1000, 1024, 1, 1)
    conv and the MAC count is the paper's."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(self.conv(x)).flatten(1)


class Darknet(nn.Module):
    """Stem conv, five stages (each halves the resolution), classifier head."""

    def __init__(self, stage: type[PoolStage | DarkStage], depths: tuple[int, ...],
                 head: type[ConvPoolHead | ClassifierHead], negative_slope: float, num_classes: int = 1000,
                 in_chans: int = 3):
        super().__init__()
        act_layer = functools.partial(nn.LeakyReLU, negative_slope)
        self.stem = nn.Sequential()
        self.stem.add_module("conv1", ConvNormAct(in_chans, STEM_CHS, 3, act_layer=act_layer))
        stages, prev_chs = [], STEM_CHS
        for out_chs, depth in zip(STAGE_CHS, depths, strict=True):
            stages.append(stage(prev_chs, out_chs, depth, act_layer))
            prev_chs = out_chs
        self.stages = nn.Sequential(*stages)
        self.head = head(prev_chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@dataclass(frozen=True)
class DarknetConfig:
    stage: type[PoolStage | DarkStage]
    depths: tuple[int, int, int, int, int]  # convs per PoolStage, residual blocks per DarkStage
    head: type[ConvPoolHead | ClassifierHead]
    negative_slope: float  # LeakyReLU slope of the reference weights


_CONFIGS = {
    "darknet19": DarknetConfig(PoolStage, (1, 3, 3, 5, 5), ConvPoolHead, negative_slope=0.1),
    "darknet53": DarknetConfig(DarkStage, (1, 2, 8, 8, 4), ClassifierHead, negative_slope=0.01),
}


def _create_darknet(name: str, **overrides) -> Darknet:
    cfg = _CONFIGS[name]
    return Darknet(cfg.stage, cfg.depths, cfg.head, cfg.negative_slope, **overrides)


_YOLO9000 = "Redmon & Farhadi, YOLO9000: Better, Faster, Stronger, CVPR 2017"
_YOLOV3 = "Redmon & Farhadi, YOLOv3: An Incremental Improvement, arXiv 2018"


# Darknet's classifier input: RGB in [0, 1], no normalisation, short side resized to 224, centre crop.
@register_model(family="darknet", paper=_YOLO9000, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), crop_pct=1.0,
                reference_params=20_842_376)
def darknet19(**overrides) -> Darknet:
    return _create_darknet("darknet19", **overrides)


@register_model(family="darknet", paper=_YOLOV3, input_size=(3, 256, 256), interpolation="bicubic",
                crop_pct=0.887, reference="timm:darknet53", reference_params=41_609_928)
def darknet53(**overrides) -> Darknet:
    return _create_darknet("darknet53", **overrides)
