"""Xception: Chollet's original and the aligned (DeepLab) Xception-41, -65 and -71.

Papers: "Xception: Deep Learning with Depthwise Separable Convolutions" (Chollet, CVPR 2017); the
aligned variants: "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation"
(Chen et al., ECCV 2018), after MSRA's COCO 2017 entry (Qi et al.).

Both are an entry flow that halves the resolution down to 1/16, a middle flow of residual blocks at
728 channels, and an exit flow to 2048 channels at 1/32; blocks are depthwise-separable 3x3 convs
with a 1x1 conv + BN shortcut where the width or the resolution changes.

- ``legacy_xception`` is the paper's network (Cadene's port of the Keras weights, timm's
  ``legacy_xception``): two unpadded stem convs, separable convs with nothing between depthwise and
  pointwise, a 3x3 stride-2 max pool ending each strided block, BN eps 1e-5. Keys are timm's
  (``conv1``, ``block1``..``block12``, ``rep.<i>``, ``skip``/``skipbn``, ``fc``); Cadene's
  ``pretrainedmodels`` names the classifier ``last_linear`` (``remap_cadene``).
- ``xception41/65/71`` are DeepLab's aligned form: stride-2 separable convs instead of max pools, a BN
  between depthwise and pointwise, 8 or 16 middle blocks; Xception-71 spreads its entry-flow
  strides over five blocks. BN eps 1e-3 (TF-slim). Keys are timm's ``xception_aligned`` (``stem.<i>``,
  ``blocks.<i>.stack.conv<j>.conv_dw``/``bn_dw``/``conv_pw``/``bn_pw``, ``shortcut``, ``head.fc``).

Export notes (../shared/families.md): the family is clean, and each pitfall that could apply does not:
- P-SAME: DeepLab pads its stride-2 convs explicitly (``fixed_padding``: one pixel before, one after,
  then "VALID"), which is PyTorch's symmetric ``padding=1``, not TF "SAME": the pads are Conv and
  MaxPool attributes, with no Pad node and no Shape subgraph, whatever the input size.
- P-CEIL: the legacy max pools are floor-mode with padding 1. Every stride-2 layer (3x3 with pad 1,
  pool with pad 1, 1x1 shortcut) maps a side n to ceil(n / 2), so the residual sums line up at any
  input size, odd sides included: size_divisor=1.
- P-ADAPT: the head pools globally (ONNX GlobalAveragePool), so no pool kernel depends on the size.
- The first ReLU of every residual block is not in place: the shortcut reads the block's input after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, ClassifierHead, ConvNormAct, global_avg_pool
from ._registry import INCEPTION_MEAN, INCEPTION_STD, StateDict, register_model

MIDDLE_WIDTH = 728
TF_BN_EPS = 1e-3  # TF-slim's BN epsilon, kept by the DeepLab checkpoints and timm's aligned variants


class LegacySeparableConv2d(nn.Module):
    """Depthwise 3x3 (pad 1) -> pointwise 1x1 with nothing between: the paper's separable conv (Keras
    ``SeparableConv2D``); the BN and ReLU around it belong to the block."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, in_chs, 3, 1, 1, groups=in_chs, bias=False)
        self.pointwise = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class LegacyBlock(nn.Module):
    """``reps`` times (ReLU -> separable 3x3 -> BN), a 3x3 max pool where the block strides, plus the
    input through a 1x1 conv + BN where the width or the resolution changes. ``rep`` keeps the
    parameter-free ReLUs at their places in timm's Sequential, so the indices in the keys line up."""

    def __init__(self, in_chs: int, out_chs: int, reps: int, stride: int, start_with_relu: bool, grow_first: bool):
        super().__init__()
        if in_chs != out_chs or stride != 1:
            self.skip = nn.Conv2d(in_chs, out_chs, 1, stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_chs)
        else:
            self.skip = None
        # Entry and middle blocks widen in their first conv, the exit block in its last.
        widths = [out_chs] * reps if grow_first else [in_chs] * (reps - 1) + [out_chs]
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            # The first ReLU sees the block's input, which the shortcut still needs: not in place.
            layers += [nn.ReLU(inplace=i > 0), LegacySeparableConv2d(in_chs, width), nn.BatchNorm2d(width)]
            in_chs = width
        if not start_with_relu:  # block1 follows the stem's own ReLU
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + shortcut


class Xception(nn.Module):
    """Chollet's Xception: unpadded 3x3 stem convs (32, 64), ``blocks`` (rows of ``_LEGACY_BLOCKS``),
    then two separable convs to 1536 and 2048 channels, each followed by BN and ReLU."""

    def __init__(self, blocks: Sequence[tuple[int, int, int, bool]], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 32, 3, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(32, 64, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.act2 = nn.ReLU(inplace=True)
        in_chs = 64
        self.block_names: list[str] = []
        for i, (out_chs, reps, stride, grow_first) in enumerate(blocks, 1):
            self.block_names.append(f"block{i}")
            self.add_module(self.block_names[-1], LegacyBlock(in_chs, out_chs, reps, stride, i > 1, grow_first))
            in_chs = out_chs
        self.conv3 = LegacySeparableConv2d(in_chs, 1536)
        self.bn3 = nn.BatchNorm2d(1536)
        self.act3 = nn.ReLU(inplace=True)
        self.num_features = 2048
        self.conv4 = LegacySeparableConv2d(1536, self.num_features)
        self.bn4 = nn.BatchNorm2d(self.num_features)
        self.act4 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        for name in self.block_names:
            x = getattr(self, name)(x)
        x = self.act3(self.bn3(self.conv3(x)))
        return self.act4(self.bn4(self.conv4(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg_pool(self.forward_features(x)).flatten(1))


@dataclass(frozen=True)
class AlignedBlock:
    """One aligned Xception block: three separable 3x3 convs to ``widths``, the last one with
    ``stride``. ``relu_inside`` puts a ReLU after each of their BNs instead of before each conv (the
    last block); ``residual=False`` drops the shortcut (also the last block)."""

    widths: tuple[int, int, int]
    stride: int = 1
    relu_inside: bool = False
    residual: bool = True


class SeparableConvBn(nn.Module):
    """Depthwise 3x3 -> BN [-> ReLU] -> pointwise 1x1 -> BN [-> ReLU]: DeepLab's separable conv, which
    adds a BN (and optionally a ReLU) between depthwise and pointwise, after MobileNetV1."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: type[nn.Module] | None):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_chs, in_chs, 3, stride, 1, groups=in_chs, bias=False)
        self.bn_dw = BatchNormAct2d(in_chs, act_layer, TF_BN_EPS)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn_pw = BatchNormAct2d(out_chs, act_layer, TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_pw(self.conv_pw(self.bn_dw(self.conv_dw(x))))


class XceptionModule(nn.Module):
    """Three separable convs (``stack.act<j>``/``stack.conv<j>``, timm's names) plus the shortcut."""

    def __init__(self, in_chs: int, block: AlignedBlock):
        super().__init__()
        out_chs = block.widths[-1]
        self.residual = block.residual
        self.shortcut = None
        if block.residual and (in_chs != out_chs or block.stride != 1):
            self.shortcut = ConvNormAct(in_chs, out_chs, 1, block.stride, act_layer=None, eps=TF_BN_EPS)
        self.stack = nn.Sequential()
        for j, width in enumerate(block.widths, 1):
            if not block.relu_inside:
                # The first ReLU sees the block's input, which the shortcut still needs: not in place.
                self.stack.add_module(f"act{j}", nn.ReLU(inplace=j > 1))
            stride = block.stride if j == len(block.widths) else 1
            self.stack.add_module(f"conv{j}", SeparableConvBn(in_chs, width, stride,
                                                             nn.ReLU if block.relu_inside else None))
            in_chs = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stack(x)
        if not self.residual:
            return out
        return out + (x if self.shortcut is None else self.shortcut(x))


class XceptionAligned(nn.Module):
    """Stem (3x3/2 to 32, 3x3 to 64, each conv-BN-ReLU), ``blocks``, global pool and ``head.fc``."""

    def __init__(self, blocks: Sequence[AlignedBlock], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(in_chans, 32, 3, 2, eps=TF_BN_EPS),
                                  ConvNormAct(32, 64, 3, eps=TF_BN_EPS))
        in_chs, modules = 64, []
        for block in blocks:
            modules.append(XceptionModule(in_chs, block))
            in_chs = block.widths[-1]
        self.blocks = nn.Sequential(*modules)
        self.num_features = in_chs
        self.head = ClassifierHead(in_chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def remap_cadene(state: StateDict) -> dict[str, torch.Tensor]:
    """Cadene's ``pretrainedmodels.xception`` keys -> ours: only the classifier is renamed."""
    return {("fc" + key[len("last_linear"):] if key.startswith("last_linear.") else key): value
            for key, value in state.items()}


# Chollet's Figure 5 as LegacyBlock rows: (width, separable convs, stride, grow_first).
_LEGACY_BLOCKS = (
    (128, 2, 2, True), (256, 2, 2, True), (MIDDLE_WIDTH, 2, 2, True),  # entry flow
    *[(MIDDLE_WIDTH, 3, 1, True)] * 8,  # middle flow
    (1024, 2, 2, False),  # exit flow: widens in its last conv
)


@dataclass(frozen=True)
class AlignedConfig:
    entry: tuple[tuple[int, int], ...]  # (width, stride) per entry-flow block, three convs at that width
    middle_depth: int  # middle-flow blocks at MIDDLE_WIDTH


# The exit flow is the same for every aligned variant.
_ALIGNED_EXIT = (AlignedBlock((MIDDLE_WIDTH, 1024, 1024), 2),
                 AlignedBlock((1536, 1536, 2048), relu_inside=True, residual=False))

_ALIGNED_CONFIGS = {
    "xception41": AlignedConfig(entry=((128, 2), (256, 2), (MIDDLE_WIDTH, 2)), middle_depth=8),
    "xception65": AlignedConfig(entry=((128, 2), (256, 2), (MIDDLE_WIDTH, 2)), middle_depth=16),
    "xception71": AlignedConfig(entry=((128, 2), (256, 1), (256, 2), (MIDDLE_WIDTH, 1), (MIDDLE_WIDTH, 2)),
                                middle_depth=16),
}


def _create_xception(name: str, **overrides) -> Xception | XceptionAligned:
    if name == "legacy_xception":
        return Xception(_LEGACY_BLOCKS, **overrides)
    cfg = _ALIGNED_CONFIGS[name]
    entry = [AlignedBlock((width,) * 3, stride) for width, stride in cfg.entry]
    middle = [AlignedBlock((MIDDLE_WIDTH,) * 3)] * cfg.middle_depth
    return XceptionAligned([*entry, *middle, *_ALIGNED_EXIT], **overrides)


_PAPER = "Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR 2017"
_PAPER_ALIGNED = (f"{_PAPER}; aligned form: Chen et al., Encoder-Decoder with Atrous Separable Convolution "
                  "for Semantic Image Segmentation, ECCV 2018")
# Any side from min_size up works, odd ones included: every stride-2 layer maps n to ceil(n / 2) and
# the head pools globally. min_size is the total stride, 32: smaller inputs still run (down to 7 px
# for the legacy stem's unpadded convs) but leave the exit flow computing mostly padding.
# timm's pretrained cfgs: inputs in [-1, 1], bicubic, 299.
_TIMM_EVAL = dict(family="xception", input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD,
                  interpolation="bicubic", size_divisor=1, min_size=32)


# Cadene's eval transform, kept by timm's .tf_in1k: resize to 333, center crop 299.
@register_model(**_TIMM_EVAL, paper=_PAPER, crop_pct=0.8975, reference="timm:legacy_xception",
                reference_params=22_855_952, aliases=("xception",), remap=remap_cadene)
def legacy_xception(**overrides) -> Xception:
    return _create_xception("legacy_xception", **overrides)


@register_model(**_TIMM_EVAL, paper=_PAPER_ALIGNED, crop_pct=0.903, reference="timm:xception41",
                reference_params=26_969_560)
def xception41(**overrides) -> XceptionAligned:
    return _create_xception("xception41", **overrides)


# timm's default weights for xception65 are its own .ra3_in1k (crop 0.94), not the TF port (0.903).
@register_model(**_TIMM_EVAL, paper=_PAPER_ALIGNED, crop_pct=0.94, reference="timm:xception65",
                reference_params=39_916_312)
def xception65(**overrides) -> XceptionAligned:
    return _create_xception("xception65", **overrides)


@register_model(**_TIMM_EVAL, paper=_PAPER_ALIGNED, crop_pct=0.903, reference="timm:xception71",
                reference_params=42_338_736)
def xception71(**overrides) -> XceptionAligned:
    return _create_xception("xception71", **overrides)
