"""IGCV: Interleaved Group Convolutions, generations 1 to 3.

Papers: "Interleaved Group Convolutions for Deep Neural Networks" (Zhang et al., ICCV 2017);
"IGCV2: Interleaved Structured Sparse Convolutional Neural Networks" (Xie et al., CVPR 2018,
arXiv:1804.06202); "IGCV3: Interleaved Low-Rank Group Convolutions for Efficient Deep Neural Networks"
(Sun et al., BMVC 2018, arXiv:1806.00178).

All three replace a dense convolution by a product of sparse ones: group convolutions with channel
permutations between them, chosen so that every output channel still sees every input channel.

- **IGCV1** (hellozting/InterleavedGroupConvolutions, MXNet, the released ImageNet symbols
  ``resnet_gcwf_noshare_imagenet_d18b{100,16,4}-symbol.json``): a ResNet-18 whose 3x3 convs (and
  projection shortcuts) are IGC blocks: a primary 3x3 group conv with L partitions, a permutation, a
  secondary 1x1 group conv with M = width / L partitions, the permutation back, then BN (eps 2e-5) and
  ReLU. Widths and L per stage are the symbols' (L100M2 doubles L at each stage, L16M16 and L4M32 double
  M); the counts below are the symbols' own, exactly, and so are their MACs (1.26, 2.27, 1.94 G: the
  README's 1.3, 2.2, 1.9). The README's parameter figures follow no one counting rule: L100M2's 8.61M
  is the whole network (8,637,900; 8,607,700 without BN), L4M32's 11.205M and L16M16's 11.329M are
  0.2% and 1.3% from the count without the 1000-way classifier (as is its ResNet-18 row, 11.151M,
  0.2% from torchvision's resnet18 without fc), and its ResNet C=69 row (11.333M) matches neither count
  of its own released symbol (13.54M, 12.99M without fc). tests/test_family_igcv.py checks the three
  IGC figures within 2% that way.
- **IGCV2** has no official code or weights. We follow the paper's block, a product of structured
  sparse kernels with permutations between them: a channel-wise 3x3 conv, then two group 1x1 convs with
  the permutation over the first one's groups between them, and one BN + ReLU after the whole product,
  where IGCV1's code places them. The two 1x1 convs meet the paper's complementary condition (each group
  of the second takes one channel from every group of the first, so their product is dense) and its
  balance condition (K2 * K3 = C_in channels per branch, K2 the largest divisor of C_in not above its
  square root). There is no permutation back after the last conv, as IGCV3's authors left theirs out
  (commented out in symbols/igcv3.py): it would only relabel the block's outputs, the next block's
  product is dense whatever the order of its inputs, and without it the BN folds into that conv at
  export. (IGCV1 keeps its permutation back, which its weights' channel order needs, so its 16 BNs stay
  BatchNormalization ops after a Transpose.) The skeleton is MobileNetV1's (32-channel stem, 13 blocks to 1024 channels, no head conv), the
  baseline of the paper's ImageNet comparison, with IGCV2 blocks in place of its depthwise-separable
  ones. No parameter count is claimed: the paper's ImageNet widths are not reproduced here (1,356,648
  parameters, 0.10 GMACs).
- **IGCV3-D 1.0** (homles11/IGCV3 ``symbols/igcv3.py`` and the released ``models/igcv3-symbol.json``):
  MobileNetV2's skeleton with doubled depths [1, 4, 6, 8, 6, 6, 1], each block a group 1x1 expand (2
  groups; present even at t=1) -> BN -> permutation (2 groups) -> depthwise 3x3 -> BN -> ReLU6 -> group
  1x1 project (2 groups) -> BN, with no activation after the expand and no permutation after the
  project, as in the released symbol. 3,491,688 parameters, the symbol's count exactly.

Key names: IGCV1 uses ResNet's (``conv1``, ``layer1.0.conv1.convs.0``, ``layer1.0.downsample.0``,
``fc``), IGCV2/3 timm's MobileNet names (``conv_stem``, ``blocks.1.0.conv_pw``, ``conv_head``,
``classifier``). :func:`remap_mxnet_igcv1` and :func:`remap_mxnet_igcv3` convert the authors' MXNet
arg/aux names (``g1_b1_conv1_conv2_weight``, ``seq-1-block0-exp-batchnorm_moving_var``, with or without
the ``arg:``/``aux:`` prefixes of a ``.params`` file).

Export pitfalls (../shared/families.md):
- P-SHUF: every permutation is :func:`shuffle_channels`, the (g, C/g) view transposed, which is the
  authors' convention: IGCV1's custom ``Reorder(branch_factor=g)`` op (src/reorder-inl.h: swap batch
  and channels, reshape to (g, C/g, ...), swap back) and IGCV3's reshape(0, -4, g, -1, -2) /
  swapaxes(1, 2); the tests run both literally against our blocks. Its reshape targets are constants
  with -1 for the batch: the batch stays dynamic and no Shape/Slice/Concat subgraph is left per
  shuffle (``_layers.channel_shuffle`` leaves one under a dynamic batch).
- P-ADAPT: none. The MXNet symbols end in a 7x7 average pool, which is global at 224; we pool
  globally, so every multiple of 32 from 32 up exports and validates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, global_avg_pool
from ._registry import StateDict, register_model

ConvDef = tuple[int, int, int]  # kernel, output channels, groups


def shuffle_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``_layers.channel_shuffle`` (channel ``j * groups + i`` of the result is input channel
    ``i * (C/groups) + j``) with constant reshape targets: C, H and W as Python ints, which tracing
    writes as constants (every export fixes H and W; only the batch is dynamic), and -1 for the batch."""
    channels, height, width = (int(side) for side in x.shape[1:])
    x = x.reshape(-1, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(-1, channels, height, width)


class InterleavedGroupConv(nn.Module):
    """A product of group convs, each followed by the channel shuffle over its groups, then BN [-> act].

    ``convs`` are (kernel, out channels, groups), the first one carrying the stride. ``permute_back=False``
    leaves out the last conv's shuffle (IGCV2). A shuffle over one group, or over as many groups as
    channels, is the identity and is left out of the graph.
    """

    def __init__(self, in_chs: int, convs: Sequence[ConvDef], stride: int = 1,
                 act_layer: type[nn.Module] | None = nn.ReLU, eps: float = 1e-5, permute_back: bool = True):
        super().__init__()
        layers = []
        for index, (kernel, out_chs, groups) in enumerate(convs):
            layers.append(nn.Conv2d(in_chs, out_chs, kernel, stride if index == 0 else 1, kernel // 2,
                                    groups=groups, bias=False))
            in_chs = out_chs
        self.convs = nn.ModuleList(layers)
        self.shuffles = [1 < conv.groups < conv.out_channels for conv in layers]
        if not permute_back:
            self.shuffles[-1] = False
        self.bn = BatchNormAct2d(in_chs, act_layer, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, shuffle in zip(self.convs, self.shuffles, strict=True):
            x = conv(x)
            if shuffle:
                x = shuffle_channels(x, conv.groups)
        return self.bn(x)


# --- IGCV1 --------------------------------------------------------------------------------------

_MXNET_BN_EPS = 2e-5  # the IGCV1 symbols' BatchNorm eps


class IGCBasicBlock(nn.Module):
    """ResNet's basic block with IGC convs: IGC 3x3 -> ReLU -> IGC 3x3, plus the shortcut, then ReLU.
    The projection shortcut (where the width changes) is a 1x1 group conv with the stage's L groups."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, partitions: int):
        super().__init__()
        secondary = out_chs // partitions
        if secondary * partitions != out_chs:
            raise ValueError(f"an IGC block needs a width divisible by L={partitions}; got {out_chs}")
        igc = ((3, out_chs, partitions), (1, out_chs, secondary))
        self.conv1 = InterleavedGroupConv(in_chs, igc, stride, nn.ReLU, _MXNET_BN_EPS)
        self.conv2 = InterleavedGroupConv(out_chs, igc, 1, None, _MXNET_BN_EPS)
        self.downsample = None
        if in_chs != out_chs:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, groups=partitions, bias=False),
                nn.BatchNorm2d(out_chs, eps=_MXNET_BN_EPS))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)


@dataclass(frozen=True)
class IGCV1Config:
    stem_chs: int
    widths: tuple[int, int, int, int]  # output channels of the four stages
    partitions: tuple[int, int, int, int]  # L of each stage: groups of the 3x3 (and the shortcut) conv
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)  # ResNet-18


class IGCResNet(nn.Module):
    """7x7 stem -> max pool -> four stages of IGC basic blocks -> global pool -> fc."""

    def __init__(self, cfg: IGCV1Config, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, cfg.stem_chs, 7, 2, 3, bias=False)
        self.bn1 = BatchNormAct2d(cfg.stem_chs, nn.ReLU, _MXNET_BN_EPS)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_chs = cfg.stem_chs
        for index, (width, partitions, depth) in enumerate(zip(cfg.widths, cfg.partitions, cfg.depths, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = [IGCBasicBlock(in_chs if i == 0 else width, width, stride if i == 0 else 1, partitions)
                      for i in range(depth)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            in_chs = width
        self.fc = nn.Linear(in_chs, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg_pool(self.forward_features(x)).flatten(1))


# --- IGCV2 and IGCV3 ----------------------------------------------------------------------------

class IGCV2Block(InterleavedGroupConv):
    """Channel-wise 3x3 -> group 1x1 (K2 channels a group) -> shuffle -> group 1x1 (K3 = C_in / K2) ->
    BN -> ReLU (see the module docstring for the choice of K2 and the missing permutation back)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, act_layer: type[nn.Module] = nn.ReLU):
        k2 = max(d for d in range(1, math.isqrt(in_chs) + 1) if in_chs % d == 0)
        first_groups = in_chs // k2
        if out_chs % first_groups:
            raise ValueError(f"an IGCV2 block from {in_chs} channels needs a width divisible by "
                             f"{first_groups}; got {out_chs}")
        chain = ((3, in_chs, in_chs), (1, out_chs, first_groups), (1, out_chs, out_chs // first_groups))
        super().__init__(in_chs, chain, stride, act_layer, permute_back=False)


class IGCV3Block(nn.Module):
    """Group 1x1 expand -> BN -> shuffle -> dw 3x3 -> BN -> act -> group 1x1 project -> BN [+ input]."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, expansion: int,
                 act_layer: type[nn.Module] = nn.ReLU6, groups: int = 2):
        super().__init__()
        mid_chs = in_chs * expansion
        self.groups = groups
        # Every stage's first block changes the width, so this is the authors' rule too: a residual
        # on all blocks but the first of each stage.
        self.has_skip = stride == 1 and in_chs == out_chs
        self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.conv_dw = nn.Conv2d(mid_chs, mid_chs, 3, stride, 1, groups=mid_chs, bias=False)
        self.bn2 = BatchNormAct2d(mid_chs, act_layer)
        self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = shuffle_channels(self.bn1(self.conv_pw(x)), self.groups)
        out = self.bn3(self.conv_pwl(self.bn2(self.conv_dw(out))))
        return out + x if self.has_skip else out


@dataclass(frozen=True)
class MobileConfig:
    """A MobileNet skeleton: stem 3x3 s2 -> stages -> [1x1 head conv] -> global pool -> classifier."""

    block: Callable[..., nn.Module]  # (in_chs, out_chs, stride, *row[:-3], act_layer) -> block
    stages: tuple[tuple[int, ...], ...]  # rows ending in c, n, s (see the tables)
    act_layer: type[nn.Module]
    stem_chs: int = 32
    head_chs: int = 0  # 0: no head conv (MobileNetV1)


class IGCMobileNet(nn.Module):
    """IGCV2 and IGCV3: a :class:`MobileConfig` skeleton with timm's MobileNet module names."""

    def __init__(self, cfg: MobileConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv_stem = nn.Conv2d(in_chans, cfg.stem_chs, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(cfg.stem_chs, cfg.act_layer)
        in_chs, stages = cfg.stem_chs, []
        for *options, out_chs, repeats, stride in cfg.stages:
            blocks = []
            for index in range(repeats):
                blocks.append(cfg.block(in_chs, out_chs, stride if index == 0 else 1, *options, cfg.act_layer))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head, self.bn2 = nn.Identity(), nn.Identity()
        if cfg.head_chs:
            self.conv_head = nn.Conv2d(in_chs, cfg.head_chs, 1, bias=False)
            self.bn2 = BatchNormAct2d(cfg.head_chs, cfg.act_layer)
            in_chs = cfg.head_chs
        self.classifier = nn.Linear(in_chs, num_classes)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_avg_pool(self.forward_features(x)).flatten(1))


def _init_weights(model: nn.Module) -> None:
    """He-normal over each group's fan-out (timm's MobileNet init). PyTorch's kaiming fan-out ignores the
    groups, which divides a group conv's weights by sqrt(groups): 1/40 for IGCV1-L100M2's 1600 channels."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))


# --- the authors' MXNet checkpoints -------------------------------------------------------------

_MXNET_PARAMS = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias",
                 "moving_mean": "running_mean", "moving_var": "running_var"}
_MXNET_KEY = re.compile(r"(?:arg:|aux:)?(.+)_(weight|bias|gamma|beta|moving_mean|moving_var)")


@dataclass(frozen=True)
class MXNetLayout:
    """How one generation's MXNet symbol names its layers: ``ends`` the stem, head and classifier, and
    ``block`` a block's layer, with groups ``stage``, ``block`` (counted from ``first_block``) and
    ``part``, one of ``parts``. Our stage ``s`` is ``<stages><s>`` (its number as the authors')."""

    ends: dict[str, str]
    block: re.Pattern
    parts: dict[str, str]
    stages: str
    first_block: int

    def layer(self, name: str) -> str | None:
        if name in self.ends:
            return self.ends[name]
        match = self.block.fullmatch(name)
        if match is None or match["part"] not in self.parts:
            return None
        return f"{self.stages}{match['stage']}.{int(match['block']) - self.first_block}.{self.parts[match['part']]}"

    def remap(self, state: StateDict) -> dict[str, torch.Tensor]:
        """MXNet arg/aux names (``<layer>_<param>``, a ``.params`` file's ``arg:``/``aux:`` prefix or
        not) -> ours; an unknown name is an error, so nothing is dropped silently."""
        remapped = {}
        for key, value in state.items():
            match = _MXNET_KEY.fullmatch(key)
            layer = self.layer(match.group(1)) if match else None
            if layer is None:
                raise ValueError(f"not an IGCV MXNet parameter name: {key!r}")
            remapped[f"{layer}.{_MXNET_PARAMS[match.group(2)]}"] = value
        return remapped


# network/resnet_igc_imgnet_d18.py: g0 the stem, g<stage>_b<block> from 1; in a block the two IGC convs
# (conv<i>_conv1 the primary, conv<i>_conv2 the secondary, one BN each) and the projection.
_IGCV1_MXNET = MXNetLayout(
    ends={"g0_conv": "conv1", "g0_bn": "bn1", "fc_score": "fc"},
    block=re.compile(r"g(?P<stage>[1-4])_b(?P<block>\d+)_(?P<part>\w+)"),
    parts={"conv1_conv1": "conv1.convs.0", "conv1_conv2": "conv1.convs.1", "conv1_bn": "conv1.bn",
           "conv2_conv1": "conv2.convs.0", "conv2_conv2": "conv2.convs.1", "conv2_bn": "conv2.bn",
           "proj_conv": "downsample.0", "proj_bn": "downsample.1"},
    stages="layer", first_block=1)
# symbols/igcv3.py: seq-<stage>-block<block>, both from 0.
_IGCV3_MXNET = MXNetLayout(
    ends={"first-3x3-conv-conv2d": "conv_stem", "first-3x3-conv-batchnorm": "bn1",
          "last-1x1-conv-conv2d": "conv_head", "last-1x1-conv-batchnorm": "bn2", "fc": "classifier"},
    block=re.compile(r"seq-(?P<stage>\d)-block(?P<block>\d+)-(?P<part>[\w-]+)"),
    parts={"exp-conv2d": "conv_pw", "exp-batchnorm": "bn1", "depthwise-conv2d": "conv_dw",
           "depthwise-batchnorm": "bn2", "linear-conv2d": "conv_pwl", "linear-batchnorm": "bn3"},
    stages="blocks.", first_block=0)


def remap_mxnet_igcv1(state: StateDict) -> dict[str, torch.Tensor]:
    """hellozting/InterleavedGroupConvolutions ImageNet checkpoints (``g1_b1_conv1_conv2_weight``) -> ours."""
    return _IGCV1_MXNET.remap(state)


def remap_mxnet_igcv3(state: StateDict) -> dict[str, torch.Tensor]:
    """homles11/IGCV3 checkpoints (``seq-1-block0-exp-batchnorm_moving_var``) -> ours."""
    return _IGCV3_MXNET.remap(state)


# --- variants -----------------------------------------------------------------------------------

# The released symbols: stem width, stage widths, L per stage (M = width / L).
_IGCV1_L100M2 = IGCV1Config(100, (200, 400, 800, 1600), (100, 200, 400, 800))
_IGCV1_L16M16 = IGCV1Config(256, (256, 512, 1024, 2048), (16, 16, 16, 16))
_IGCV1_L4M32 = IGCV1Config(128, (128, 256, 512, 1024), (4, 4, 4, 4))
# c, n, s: output channels, blocks, stride of the first (MobileNetV1's 13 depthwise-separable blocks).
_IGCV2 = MobileConfig(IGCV2Block, ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2)), nn.ReLU)
# t, c, n, s as in MobileNetV2's Table 2, with the depths doubled except the first and last.
_IGCV3_D100 = MobileConfig(
    IGCV3Block,
    ((1, 16, 1, 1), (6, 24, 4, 2), (6, 32, 6, 2), (6, 64, 8, 2), (6, 96, 6, 1), (6, 160, 6, 2), (6, 320, 1, 1)),
    nn.ReLU6, head_chs=1280)

_CONFIGS: dict[str, IGCV1Config | MobileConfig] = {
    "igcv1_l100m2": _IGCV1_L100M2,
    "igcv1_l16m16": _IGCV1_L16M16,
    "igcv1_l4m32": _IGCV1_L4M32,
    "igcv2": _IGCV2,
    "igcv3_d100": _IGCV3_D100,
}


def _create_igcv(name: str, **overrides) -> nn.Module:
    cfg = _CONFIGS[name]
    return IGCResNet(cfg, **overrides) if isinstance(cfg, IGCV1Config) else IGCMobileNet(cfg, **overrides)


_PAPERS = {
    1: "Zhang et al., Interleaved Group Convolutions for Deep Neural Networks, ICCV 2017",
    2: "Xie et al., IGCV2: Interleaved Structured Sparse Convolutional Neural Networks, CVPR 2018",
    3: "Sun et al., IGCV3: Interleaved Low-Rank Group Convolutions for Efficient Deep Neural Networks, BMVC 2018",
}
# train_imagenet.py: 0-255 RGB pixels less its own mean over its std (fb_mean False, the default); 224 of a
# 256 resize.
_IGCV1_SPEC = dict(family="igcv", paper=_PAPERS[1], mean=(123.370, 112.757, 99.406), std=(68.998, 66.093, 68.292),
                   pixel_scale=255.0, crop_pct=0.875, remap=remap_mxnet_igcv1)
# common/data.py: 0-255 RGB pixels less the mean, no scaling; 224 of a 256 resize.
_IGCV3_SPEC = dict(family="igcv", paper=_PAPERS[3], mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0),
                   pixel_scale=255.0, crop_pct=0.875, remap=remap_mxnet_igcv3)


# Exact counts of the released MXNet symbols (conv, BN gamma/beta, fc); see the module docstring.
@register_model(**_IGCV1_SPEC, reference_params=8_637_900)
def igcv1_l100m2(**overrides) -> IGCResNet:
    return _create_igcv("igcv1_l100m2", **overrides)


@register_model(**_IGCV1_SPEC, reference_params=13_528_296)
def igcv1_l16m16(**overrides) -> IGCResNet:
    return _create_igcv("igcv1_l16m16", **overrides)


@register_model(**_IGCV1_SPEC, reference_params=12_251_240)
def igcv1_l4m32(**overrides) -> IGCResNet:
    return _create_igcv("igcv1_l4m32", **overrides)


@register_model(family="igcv", paper=_PAPERS[2], crop_pct=0.875)
def igcv2(**overrides) -> IGCMobileNet:
    return _create_igcv("igcv2", **overrides)


@register_model(**_IGCV3_SPEC, reference_params=3_491_688)
def igcv3_d100(**overrides) -> IGCMobileNet:
    return _create_igcv("igcv3_d100", **overrides)
