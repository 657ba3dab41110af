"""MicroNet M0-M3.

Paper: "MicroNet: Improving Image Recognition with Extremely Low FLOPs" (Li et al., ICCV 2021).

Neither timm nor torchvision defines it. The architecture follows the authors' code,
liyunsheng13/micronet ``backbone/{micronet.py,microconfig.py,activation.py}``, built with the options of
``scripts/eval_micronet_m{0,1,2,3}.sh`` (DYMicroBlock, DYShiftMax, ACT_MAX 2, REDUCTION 8, SHUFFLE,
group pointwise, DEPTHSEP, the spatialsepsf stem). Facts taken from that code:

- micro-factorised convs: a kxk depthwise conv is a (k, 1) and a (1, k) depthwise conv, each with BN,
  the first widening by ``c1`` and the second by ``c2``; a pointwise conv is a grouped 1x1 + BN followed
  by channel shuffles;
- stem: (3, 1) conv stride (2, 1) to g1 channels, BN, (1, 3) conv stride (1, 2) with g1 groups to g1*g2,
  BN, shuffle(g1), ReLU6;
- a block is one of three layouts (``_micro_block_layers``), chosen by its row of the config table; it
  adds its input where the stride is 1 and the width is kept;
- DYShiftMax (the dynamic activation): from the block input's global mean, Linear-ReLU-Linear-h_sigmoid
  gives per-sample, per-channel coefficients in [-2, 2] (plus fixed initial values), and the output is
  ``max_k(a_k * x + b_k * shift(x))`` over one or two branches, where ``shift`` moves channel (i, j) of a
  (groups, C/groups) grid to (i + 1, j + 1), both modulo;
- head: ReLU6, global mean, h_swish, then Linear-BN1d-h_swish to 640/960/1024 channels, dropout, and
  Linear-BN1d-h_swish to the classes: the logits themselves go through a BN and an h_swish.

Module names are the authors' (``features.3.layers.5.fc.2.weight``, ``classifier.0.linear.1.running_var``),
including the empty slots their block Sequentials hold for layers a config switches off (``nn.Identity``
here), so their checkpoints load strictly without a remap (the loader strips DataParallel's ``module.``).

Export pitfalls (../shared/families.md) and how they are met:
- P-IDXSEL: the shift gathers channels through an index that the authors keep as a plain attribute (not
  a buffer: it stays on the CPU when the model moves). Here it is a non-persistent buffer made once in
  ``__init__``: it follows the model's device, stays out of the state_dict (the authors' checkpoints still
  load strictly), and exports as one Gather whose indices are a constant initializer.
- P-SHUF: the authors' ChannelShuffle and ChannelShuffle2 both view the channels as (g, C/g) and transpose,
  torchvision's convention (``_layers.channel_shuffle``); their interleaving ChannelShuffle2(C/2) is kept
  as written. Each shuffle is that permutation as one constant-index Gather, like the shift: a
  Reshape-Transpose-Reshape under a dynamic batch brings a Shape/Slice/Concat subgraph per Reshape
  (M0 at 224, simplified: 540 nodes that way, 348 with Gathers; ONNX Runtime on one CPU thread at batch 1
  took 2.5 ms against 2.0, the 10th percentiles on a busy machine). Shuffles that are the identity
  (g = 1 or g = C) are left out of the graph.
- P-5D: the authors' MaxGroupPooling (a 5-D view and a max over it) is used by their stem only where
  g1*g2 == 2*STEM_CH; in M0-M3 g1*g2 == STEM_CH (ReLU6 instead), so it is not defined here, and with the
  shuffles as Gathers the graph has no 5-D intermediate at all.
- h_sigmoid and h_swish (written with ReLU6 by the authors) are exactly ``nn.Hardsigmoid`` and
  ``nn.Hardswish``: one ONNX HardSigmoid/HardSwish each at opset 17 (P-HSWISH), not Add/Clip/Mul chains.
- Dynamic batch: the coefficients are reshaped with flatten/unsqueeze, never with ``x.size()``'s batch.

Preprocessing (``utils/dataloaders.py``): bilinear resize to 256, center crop 224, ImageNet mean/std.
Parameter counts are those of the authors' code (../shared/families.md); state_dict equality with it is
pinned in tests/test_family_micronet.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ._layers import global_avg_pool, make_divisible
from ._registry import register_model

_ACT_MAX = 2.0  # ACTIVATION.ACT_MAX: DYShiftMax's coefficients span [-ACT_MAX, ACT_MAX]
_REDUCTION = 8  # ACTIVATION.REDUCTION: DYShiftMax squeezes by REDUCTION * r (the row's r)


class ChannelShuffle(nn.Module):
    """The authors' ChannelShuffle and ChannelShuffle2: view the channels as (groups, C/groups), transpose,
    flatten (``_layers.channel_shuffle``'s convention), done as one Gather over a constant index."""

    def __init__(self, groups: int, channels: int):
        super().__init__()
        self.groups = groups
        index = torch.arange(channels).view(groups, channels // groups).t().flatten()
        self.register_buffer("index", index, persistent=False)  # a graph constant, not a weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


def _shuffle(groups: int, channels: int) -> nn.Module:
    """The (groups, C/groups) shuffle of ``channels``, or nothing where it is the identity."""
    if channels % groups:
        raise ValueError(f"MicroNet: a shuffle of {groups} groups does not divide {channels} channels")
    return ChannelShuffle(groups, channels) if 1 < groups < channels else nn.Identity()


class ConvBlock(nn.Module):
    """Convs and BNs in one ``conv`` Sequential: the authors' GroupConv, DepthSpatialSepConv and
    SpatialSepConvSF all hold their layers under that name, which fixes the checkpoint keys."""

    def __init__(self, *layers: nn.Module):
        super().__init__()
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _spatial_sep_layers(in_chs: int, mid_chs: int, out_chs: int, kernel_size: int, stride: int,
                        groups: int) -> list[nn.Module]:
    """A kxk conv factorised into (k, 1) with ``groups`` groups and a depthwise (1, k), each with BN;
    each carries its own axis' stride."""
    pad = kernel_size // 2
    return [
        nn.Conv2d(in_chs, mid_chs, (kernel_size, 1), (stride, 1), (pad, 0), groups=groups, bias=False),
        nn.BatchNorm2d(mid_chs),
        nn.Conv2d(mid_chs, out_chs, (1, kernel_size), (1, stride), (0, pad), groups=mid_chs, bias=False),
        nn.BatchNorm2d(out_chs),
    ]


def _depthwise_sep(in_chs: int, exp1: int, exp2: int, kernel_size: int, stride: int) -> ConvBlock:
    """The authors' DepthSpatialSepConv: in -> in*exp1 -> in*exp1*exp2 channels, both depthwise."""
    return ConvBlock(*_spatial_sep_layers(in_chs, in_chs * exp1, in_chs * exp1 * exp2, kernel_size, stride,
                                          groups=in_chs))


def _group_conv(in_chs: int, out_chs: int, groups: int) -> ConvBlock:
    return ConvBlock(nn.Conv2d(in_chs, out_chs, 1, groups=groups, bias=False), nn.BatchNorm2d(out_chs))


def _shift_index(channels: int, groups: int) -> torch.Tensor:
    """Input channel of each output channel of DYShiftMax's shift: channel (i, j) of the (groups,
    C/groups) grid reads channel ((i + 1) % groups, (j + 1) % (C/groups))."""
    if channels % groups:
        raise ValueError(f"MicroNet: DYShiftMax's {groups} shift groups do not divide {channels} channels")
    return torch.arange(channels).view(groups, channels // groups).roll((-1, -1), (0, 1)).flatten()


class DYShiftMax(nn.Module):
    """Dynamic shift-max: ``max_k(a_k * x + b_k * shift(x))`` over ``len(init_a)`` branches (one branch
    is linear), with per-sample coefficients from an SE-like branch on the global mean of ``x``, offset by
    ``init_a``/``init_b``."""

    def __init__(self, channels: int, reduction: int, shift_groups: int, init_a: tuple[float, ...],
                 init_b: tuple[float, ...]):
        super().__init__()
        branches = len(init_a)
        self.num_coeffs = 2 * branches  # a_1, b_1[, a_2, b_2]
        squeeze = make_divisible(channels // reduction, 4)
        self.fc = nn.Sequential(
            nn.Linear(channels, squeeze),
            nn.ReLU(inplace=True),
            nn.Linear(squeeze, self.num_coeffs * channels),
            nn.Hardsigmoid(),
        )
        # Constants of the graph, not weights: out of the state_dict, like the authors' plain attributes.
        self.register_buffer("index", _shift_index(channels, shift_groups), persistent=False)
        # The authors' (h_sigmoid - 0.5) * 2 * ACT_MAX + init as one Mul and one Add: the offset holds
        # init - ACT_MAX for each coefficient.
        inits = [value - _ACT_MAX for pair in zip(init_a, init_b, strict=True) for value in pair]
        self.register_buffer("offset", torch.tensor(inits).repeat_interleave(channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coeffs = self.fc(global_avg_pool(x).flatten(1)) * (2 * _ACT_MAX) + self.offset
        coeffs = coeffs[:, :, None, None].chunk(self.num_coeffs, dim=1)
        shifted = x[:, self.index]
        branches = [a * x + b * shifted for a, b in zip(coeffs[0::2], coeffs[1::2], strict=True)]
        return torch.max(*branches) if len(branches) == 2 else branches[0]


class MicroBlockArgs(NamedTuple):
    stride: int  # s: of the row's first block
    repeats: int  # n
    out_chs: int  # c
    kernel_size: int  # ks: of the factorised depthwise conv
    exp1: int  # c1: the block's hidden width is in_chs * c1 * c2
    exp2: int  # c2
    groups1: int  # g1: groups of the expanding 1x1 conv; 0: the block starts with the depthwise conv
    shuffle1: int  # g2: shuffle groups after it, and the shift groups of the hidden DYShiftMax
    fft_chs: int  # c3: the width of the authors' unused "fft" pointwise mode; kept to mirror their table
    groups2: int  # g3: groups of the projecting 1x1 conv
    shuffle2: int  # g4: shuffle and shift groups after it; 0: no projection (the last, widening block)
    act1: int  # y1: after the expanding 1x1: 0 ReLU6, 2 two-branch DYShiftMax
    act2: int  # y2: after the depthwise conv: the same choice
    act3: int  # y3: after the projection: 0 none, 1 one-branch (linear) DYShiftMax
    ratio: int  # r: DYShiftMax squeezes its input by REDUCTION * r


def _decode_blocks(rows: tuple[tuple[int, ...], ...]) -> list[MicroBlockArgs]:
    blocks = []
    for row in rows:
        if len(row) != len(MicroBlockArgs._fields):
            raise ValueError(f"MicroNet block {row!r}: expected (s, n, c, ks, c1, c2, g1, g2, c3, g3, g4, y1, y2, "
                             "y3, r)")
        args = MicroBlockArgs(*row)
        if args.act1 not in (0, 2) or args.act2 not in (0, 2) or args.act3 not in (0, 1):
            raise ValueError(f"MicroNet block {row!r}: y1 and y2 must be 0 or 2, y3 0 or 1")
        blocks.append(args)
    return blocks


@dataclass(frozen=True)
class MicroNetConfig:
    blocks: tuple[tuple[int, ...], ...]  # MicroBlockArgs rows (microconfig.py)
    stem_groups: tuple[int, int]  # STEM_GROUPS g1, g2: the stem makes g1 * g2 (= STEM_CH) channels
    head_chs: int  # OUT_CH
    drop_rate: float  # DROPOUT
    init_a: tuple[float, float] = (1.0, 1.0)  # INIT_A: initial a_1, a_2 of the two-branch DYShiftMax
    init_b: tuple[float, float] = (0.0, 0.0)  # INIT_B


class _Activations(NamedTuple):
    """What a block's activations share: the squeeze reduction and the variant's initial coefficients."""

    reduction: int
    init_a: tuple[float, float]
    init_b: tuple[float, float]

    def hidden(self, kind: int, channels: int, shift_groups: int) -> nn.Module:
        """y1/y2: ReLU6, or the two-branch DYShiftMax."""
        if kind == 0:
            return nn.ReLU6(inplace=True)
        return DYShiftMax(channels, self.reduction, shift_groups, self.init_a, self.init_b)

    def output(self, kind: int, channels: int, shift_groups: int, reduction: int) -> nn.Module:
        """y3: nothing, or the linear one-branch DYShiftMax starting as the identity (INIT_A_BLOCK3 1, 0)."""
        if kind == 0:
            return nn.Identity()
        return DYShiftMax(channels, reduction, shift_groups, init_a=(1.0,), init_b=(0.0,))


def _micro_block_layers(in_chs: int, args: MicroBlockArgs, stride: int, acts: _Activations) -> list[nn.Module]:
    """The layers of one DYMicroBlock in the authors' slot order (identities where they hold an empty
    Sequential): depthwise-first where g1 = 0, a widening 1x1 where g4 = 0, else 1x1-depthwise-1x1."""
    hidden = in_chs * args.exp1 * args.exp2
    out, red = args.out_chs, acts.reduction
    if args.groups1 == 0:
        return [
            _depthwise_sep(in_chs, args.exp1, args.exp2, args.kernel_size, stride),
            acts.hidden(args.act2, hidden, args.shuffle1),
            _shuffle(args.shuffle1, hidden),
            _shuffle(hidden // 2, hidden) if args.act2 else nn.Identity(),
            _group_conv(hidden, out, args.groups2),
            acts.output(args.act3, out, args.shuffle2, red // 2),
            _shuffle(args.shuffle2, out),
            _shuffle(out // 2, out) if args.act3 and out % 2 == 0 else nn.Identity(),
        ]
    if args.shuffle2 == 0:
        return [_group_conv(in_chs, hidden, args.groups1), acts.output(args.act3, hidden, args.shuffle1, red)]
    # The DYShiftMax after the depthwise conv shifts over hidden / g2 groups (the authors' "expansion").
    dw_shift_groups = hidden // args.shuffle1 if args.shuffle1 != 1 else 1
    # The authors' ChannelShuffle2 here: C/4 groups where both activations are dynamic, C/2 where one is.
    shuffle_after_dw = _shuffle(hidden // (4 if args.act1 and args.act2 else 2), hidden)
    return [
        _group_conv(in_chs, hidden, args.groups1),
        acts.hidden(args.act1, hidden, args.shuffle1),
        _shuffle(args.shuffle1, hidden),
        _depthwise_sep(hidden, 1, 1, args.kernel_size, stride),
        nn.Identity(),
        acts.hidden(args.act2, hidden, dw_shift_groups),
        shuffle_after_dw if args.act1 or args.act2 else nn.Identity(),
        _group_conv(hidden, out, args.groups2),
        acts.output(args.act3, out, args.shuffle2, red // 2 if out < hidden else red),
        _shuffle(args.shuffle2, out),
        _shuffle(out // 2, out) if args.act3 else nn.Identity(),
    ]


class DYMicroBlock(nn.Module):
    def __init__(self, in_chs: int, args: MicroBlockArgs, stride: int, acts: _Activations):
        super().__init__()
        self.layers = nn.Sequential(*_micro_block_layers(in_chs, args, stride, acts))
        self.has_residual = stride == 1 and in_chs == args.out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.has_residual else out


class MicroStem(nn.Module):
    """The authors' spatialsepsf StemLayer (stride 2): a (3, 1) conv, a grouped (1, 3) conv, shuffle, ReLU6."""

    def __init__(self, in_chans: int, groups: tuple[int, int]):
        super().__init__()
        g1, g2 = groups
        layers = _spatial_sep_layers(in_chans, g1, g1 * g2, 3, 2, groups=1)
        self.stem = nn.Sequential(ConvBlock(*layers, _shuffle(g1, g1 * g2)), nn.ReLU6(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class SwishLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(in_features, out_features), nn.BatchNorm1d(out_features),
                                    nn.Hardswish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class MicroNet(nn.Module):
    def __init__(self, cfg: MicroNetConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        layers: list[nn.Module] = [MicroStem(in_chans, cfg.stem_groups)]
        in_chs = cfg.stem_groups[0] * cfg.stem_groups[1]
        for args in _decode_blocks(cfg.blocks):
            acts = _Activations(_REDUCTION * args.ratio, cfg.init_a, cfg.init_b)
            for i in range(args.repeats):
                layers.append(DYMicroBlock(in_chs, args, args.stride if i == 0 else 1, acts))
                in_chs = args.out_chs
        self.features = nn.Sequential(*layers)
        self.num_features = in_chs
        self.classifier = nn.Sequential(
            SwishLinear(in_chs, cfg.head_chs), nn.Dropout(cfg.drop_rate), SwishLinear(cfg.head_chs, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors' init (their ``_initialize_weights``): convs N(0, 2 / (kh * kw * out_channels)),
        Linear N(0, 0.01^2) without bias. It starts every DYShiftMax at its initial coefficients. With
        torch's default Linear init they start anywhere in [-2, 2] around them, and a random M2 (BN
        statistics re-estimated on the photos) takes validation's noise inputs to features of 5e5 at
        its last block (19 with this init), where FP32 ONNX misses PyTorch by 1% of the logit scale."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # their rule exactly
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The authors' ``avgpool``: ReLU6, global mean, h_swish (it has no parameters).
        pooled = F.hardswish(global_avg_pool(F.relu6(self.forward_features(x))).flatten(1))
        return self.classifier(pooled)


def _create_micronet(name: str, **overrides) -> MicroNet:
    return MicroNet(_CONFIGS[name], **overrides)


# The authors' microconfig.py tables, row for row.
_M0_BLOCKS = (
    # s, n,   c, ks, c1, c2, g1, g2,  c3, g3, g4, y1, y2, y3, r
    (2, 1,   8, 3, 2, 2,  0,  4,   8,  2,  2, 2, 0, 1, 1),
    (2, 1,  12, 3, 2, 2,  0,  8,  12,  4,  4, 2, 2, 1, 1),
    (2, 1,  16, 5, 2, 2,  0, 12,  16,  4,  4, 2, 2, 1, 1),
    (1, 1,  32, 5, 1, 4,  4,  4,  32,  4,  4, 2, 2, 1, 1),
    (2, 1,  64, 5, 1, 4,  8,  8,  64,  8,  8, 2, 2, 1, 1),
    (1, 1,  96, 3, 1, 4,  8,  8,  96,  8,  8, 2, 2, 1, 2),
    (1, 1, 384, 3, 1, 4, 12, 12,   0,  0,  0, 2, 2, 1, 2),
)
_M1_BLOCKS = (
    # s, n,   c, ks, c1, c2, g1, g2,  c3, g3, g4, y1, y2, y3, r
    (2, 1,   8, 3, 2, 2,  0,  6,   8,  2,  2, 2, 0, 1, 1),
    (2, 1,  16, 3, 2, 2,  0,  8,  16,  4,  4, 2, 2, 1, 1),
    (2, 1,  16, 5, 2, 2,  0, 16,  16,  4,  4, 2, 2, 1, 1),
    (1, 1,  32, 5, 1, 6,  4,  4,  32,  4,  4, 2, 2, 1, 1),
    (2, 1,  64, 5, 1, 6,  8,  8,  64,  8,  8, 2, 2, 1, 1),
    (1, 1,  96, 3, 1, 6,  8,  8,  96,  8,  8, 2, 2, 1, 2),
    (1, 1, 576, 3, 1, 6, 12, 12,   0,  0,  0, 2, 2, 1, 2),
)
_M2_BLOCKS = (
    # s, n,   c, ks, c1, c2, g1, g2,  c3, g3, g4, y1, y2, y3, r
    (2, 1,  12, 3, 2, 2,  0,  8,  12,  4,  4, 2, 0, 1, 1),
    (2, 1,  16, 3, 2, 2,  0, 12,  16,  4,  4, 2, 2, 1, 1),
    (1, 1,  24, 3, 2, 2,  0, 16,  24,  4,  4, 2, 2, 1, 1),
    (2, 1,  32, 5, 1, 6,  6,  6,  32,  4,  4, 2, 2, 1, 1),
    (1, 1,  32, 5, 1, 6,  8,  8,  32,  4,  4, 2, 2, 1, 2),
    (1, 1,  64, 5, 1, 6,  8,  8,  64,  8,  8, 2, 2, 1, 2),
    (2, 1,  96, 5, 1, 6,  8,  8,  96,  8,  8, 2, 2, 1, 2),
    (1, 1, 128, 3, 1, 6, 12, 12, 128,  8,  8, 2, 2, 1, 2),
    (1, 1, 768, 3, 1, 6, 16, 16,   0,  0,  0, 2, 2, 1, 2),
)
_M3_BLOCKS = (
    # s, n,   c, ks, c1, c2, g1, g2,  c3, g3, g4, y1, y2, y3, r
    (2, 1,  16, 3, 2, 2,  0, 12,  16,  4,  4, 0, 2, 0, 1),
    (2, 1,  24, 3, 2, 2,  0, 16,  24,  4,  4, 0, 2, 0, 1),
    (1, 1,  24, 3, 2, 2,  0, 24,  24,  4,  4, 0, 2, 0, 1),
    (2, 1,  32, 5, 1, 6,  6,  6,  32,  4,  4, 0, 2, 0, 1),
    (1, 1,  32, 5, 1, 6,  8,  8,  32,  4,  4, 0, 2, 0, 2),
    (1, 1,  64, 5, 1, 6,  8,  8,  48,  8,  8, 0, 2, 0, 2),
    (1, 1,  80, 5, 1, 6,  8,  8,  80,  8,  8, 0, 2, 0, 2),
    (1, 1,  80, 5, 1, 6, 10, 10,  80,  8,  8, 0, 2, 0, 2),
    (2, 1, 120, 5, 1, 6, 10, 10, 120, 10, 10, 0, 2, 0, 2),
    (1, 1, 120, 5, 1, 6, 12, 12, 120, 10, 10, 0, 2, 0, 2),
    (1, 1, 144, 3, 1, 6, 12, 12, 144, 12, 12, 0, 2, 0, 2),
    (1, 1, 864, 3, 1, 6, 12, 12,   0,  0,  0, 0, 2, 0, 2),
)

# From scripts/eval_micronet_m*.sh: NET_CONFIG, STEM_GROUPS, OUT_CH, DROPOUT, INIT_A, INIT_B.
_CONFIGS = {
    "micronet_m0": MicroNetConfig(_M0_BLOCKS, stem_groups=(2, 2), head_chs=640, drop_rate=0.05),
    "micronet_m1": MicroNetConfig(_M1_BLOCKS, stem_groups=(3, 2), head_chs=960, drop_rate=0.05),
    "micronet_m2": MicroNetConfig(_M2_BLOCKS, stem_groups=(4, 2), head_chs=1024, drop_rate=0.1),
    "micronet_m3": MicroNetConfig(_M3_BLOCKS, stem_groups=(4, 3), head_chs=1024, drop_rate=0.1,
                                  init_a=(1.0, 0.5), init_b=(0.0, 0.5)),
}

_PAPER = "Li et al., MicroNet: Improving Image Recognition with Extremely Low FLOPs, ICCV 2021"
# The authors' eval transform: bilinear resize to 256, center crop 224, ImageNet mean/std.
_AUTHORS_EVAL = dict(family="micronet", paper=_PAPER, interpolation="bilinear", crop_pct=0.875)


@register_model(**_AUTHORS_EVAL, reference_params=1_019_590)
def micronet_m0(**overrides) -> MicroNet:
    return _create_micronet("micronet_m0", **overrides)


@register_model(**_AUTHORS_EVAL, reference_params=1_777_587)
def micronet_m1(**overrides) -> MicroNet:
    return _create_micronet("micronet_m1", **overrides)


@register_model(**_AUTHORS_EVAL, reference_params=2_393_876)
def micronet_m2(**overrides) -> MicroNet:
    return _create_micronet("micronet_m2", **overrides)


@register_model(**_AUTHORS_EVAL, reference_params=2_622_960)
def micronet_m3(**overrides) -> MicroNet:
    return _create_micronet("micronet_m3", **overrides)
