"""Building blocks and a generic model for MBConv ("EfficientNet builder") networks.

MobileNetV1/V2, MnasNet, FBNet, EfficientNet (V1, Lite, V2) share one skeleton: a stride-2 conv stem,
stages of depthwise-separable / inverted-residual / fused blocks, a 1x1 head conv, global average
pooling and a linear classifier. Module and parameter names follow timm (``conv_stem``, ``bn1``,
``blocks.<stage>.<block>.conv_pw``, ``conv_head``, ``bn2``, ``classifier``), so timm state_dicts load
as they are; :func:`remap_torchvision_mbconv` converts torchvision's ``features.*`` layout.

Architectures are written in timm's block-string notation, one list of strings per stage:

    <type>_r<repeats>_k<kernel>_s<stride>[_e<expansion>]_c<channels>[_se<ratio>][_g<groups>][_noskip|_skip][_n<act>]

    type  ds   depthwise-separable: dw kxk -> [SE] -> pw 1x1 (an MBConv without expansion)
          dsa  ds with an activation after the pw conv and never a residual (MobileNetV1)
          ir   inverted residual / MBConv: pw expand -> dw kxk -> [SE] -> pw linear
          er   edge residual / fused-MBConv: kxk expand -> [SE] -> pw linear
          cn   conv-bn-act (a fused-MBConv without expansion)
    r     repeats in the stage (scaled by the depth multiplier)
    k     kernel of the dw conv (ds, dsa, ir) or of the full conv (er, cn)
    s     stride of the stage's first block (the rest use 1)
    e     expansion ratio (ir, er; ds/dsa/cn take only e1)
    c     output channels before width scaling
    se    squeeze-excite width as a fraction of the block's *input* channels
    g     ds only: the pw conv in <groups> groups, channels shuffled before the dw conv (FBNet's ir_k*_g2)
    noskip / skip   never a residual / a residual for cn, which has none by default
    n     activation override: re (ReLU), r6 (ReLU6), sw (SiLU), hs (Hardswish)

e.g. ``ir_r2_k3_s2_e6_c24_se0.25``: two MBConv blocks, 3x3 depthwise, stride 2 on the first, 6x
expansion, 24 output channels, SE squeezing to a quarter of the block input.

TF-ported weights (timm ``tf_*``) need TensorFlow "SAME" padding (../shared/families.md P-SAME):
:class:`Conv2dSame` pads asymmetrically from the input's run-time shape, so one model exports with
static or dynamic H/W and matches timm's ``Conv2dSame`` exactly.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ._layers import BatchNormAct2d, SqueezeExcite, channel_shuffle, make_divisible
from ._registry import StateDict

ACTIVATIONS: dict[str, type[nn.Module]] = {"re": nn.ReLU, "r6": nn.ReLU6, "sw": nn.SiLU, "hs": nn.Hardswish}
BLOCK_TYPES = ("ds", "dsa", "ir", "er", "cn")
_NUMERIC_TOKEN = re.compile(r"(se|r|k|s|e|c|g)(\d+(?:\.\d+)?)")
_REQUIRED = ("r", "k", "s", "c")


# --- channel rounding ---------------------------------------------------------------------------

def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Channels scaled by a width multiplier, rounded as the EfficientNet papers' reference code does
    (even at multiplier 1, so a width that is not a multiple of ``divisor`` rounds too)."""
    return make_divisible(channels * multiplier, divisor, round_limit=round_limit)


# --- architecture notation ----------------------------------------------------------------------

@dataclass(frozen=True)
class BlockDef:
    """One block (after decoding and depth scaling, ``repeats`` says how many the string asked for)."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    out_chs: int
    expansion: float = 1.0
    se_ratio: float = 0.0
    skip: bool | None = None  # None: a residual wherever input and output shapes agree
    act: type[nn.Module] | None = None  # None: the model's activation
    groups: int = 1


def decode_block(text: str) -> BlockDef:
    """Decode one block string; a malformed one raises ``ValueError`` naming the bad token."""
    kind, *tokens = text.split("_")
    if kind not in BLOCK_TYPES:
        raise ValueError(f"block string {text!r}: unknown block type {kind!r} (expected one of {BLOCK_TYPES})")
    numbers: dict[str, str] = {}
    skip, act = None, None
    for token in tokens:
        if token in ("skip", "noskip"):
            skip = token == "skip"
        elif token.startswith("n") and token[1:] in ACTIVATIONS:
            act = ACTIVATIONS[token[1:]]
        elif match := _NUMERIC_TOKEN.fullmatch(token):
            key, value = match.groups()
            if key in numbers:
                raise ValueError(f"block string {text!r}: token {token!r} repeats option {key!r}")
            numbers[key] = value
        else:
            raise ValueError(f"block string {text!r}: cannot read token {token!r}")
    missing = [key for key in _REQUIRED if key not in numbers]
    if missing:
        raise ValueError(f"block string {text!r}: missing option(s) {', '.join(missing)}")
    for key in ("r", "k", "s", "c", "g"):
        if "." in numbers.get(key, ""):
            raise ValueError(f"block string {text!r}: token {key + numbers[key]!r} must be an integer")
    expansion = float(numbers.get("e", 1))
    if kind in ("ir", "er") and "e" not in numbers:
        raise ValueError(f"block string {text!r}: {kind} blocks need an expansion token e<ratio>")
    if kind in ("ds", "dsa", "cn") and expansion != 1:
        raise ValueError(f"block string {text!r}: token {'e' + numbers['e']!r} (a {kind} block does not expand)")
    if kind == "cn" and "se" in numbers:
        raise ValueError(f"block string {text!r}: token {'se' + numbers['se']!r} (a cn block has no SE)")
    if skip is True and kind != "cn":
        raise ValueError(f"block string {text!r}: token 'skip' applies to cn blocks only")
    if "g" in numbers and kind != "ds":
        raise ValueError(f"block string {text!r}: token {'g' + numbers['g']!r} applies to ds blocks only")
    return BlockDef(kind=kind, repeats=int(numbers["r"]), kernel=int(numbers["k"]), stride=int(numbers["s"]),
                    out_chs=int(numbers["c"]), expansion=expansion, se_ratio=float(numbers.get("se", 0)),
                    skip=skip, act=act, groups=int(numbers.get("g", 1)))


def decode_arch(stages: Sequence[Sequence[str]], depth_multiplier: float = 1.0, depth_rounding: str = "ceil",
                fix_first_last: bool = False) -> list[list[BlockDef]]:
    """Block strings -> one list of blocks per stage, with repeats scaled by ``depth_multiplier``.

    ``fix_first_last`` keeps the first and last stage at their depth (EfficientNet-Lite).
    """
    decoded = []
    for index, stage in enumerate(stages):
        defs = [decode_block(text) for text in stage]
        multiplier = 1.0 if fix_first_last and index in (0, len(stages) - 1) else depth_multiplier
        repeats = _scale_stage_depth([d.repeats for d in defs], multiplier, depth_rounding)
        blocks = [d for d, count in zip(defs, repeats, strict=True) for _ in range(count)]
        # Only the first block of a stage downsamples.
        decoded.append([blocks[0], *(replace(b, stride=1) for b in blocks[1:])])
    return decoded


def _scale_stage_depth(repeats: list[int], multiplier: float, rounding: str) -> list[int]:
    """Scale a stage's total depth, then share it out over its block strings from the last one back,
    so the first (often the downsampling) string is the least likely to grow."""
    total = sum(repeats)
    if rounding == "ceil":
        target = math.ceil(total * multiplier)
    elif rounding == "round":
        target = max(1, round(total * multiplier))
    else:
        raise ValueError(f"depth rounding must be 'ceil' or 'round', got {rounding!r}")
    scaled = []
    for count in reversed(repeats):
        share = max(1, round(count / total * target))
        scaled.append(share)
        total -= count
        target -= share
    return scaled[::-1]


# --- layers -------------------------------------------------------------------------------------

def same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``x`` as TensorFlow's "SAME" does: output size ceil(size / stride), the odd pixel of
    padding at the end (right/bottom).

    Built from Concat and Slice rather than ``F.pad``: the TorchScript exporter writes F.pad's pads
    through a ConstantOfShape chain that its constant folding leaves in place, which turns every later
    shape symbolic even for a static input. Here zeros for the most padding SAME can need ((k-1)//2
    before, k//2 after) are concatenated and the result sliced to this size's amount: a static input
    folds to constants and static shapes, a dynamic one keeps a small Shape subgraph.
    """
    for dim, k, s in zip((2, 3), kernel, stride, strict=True):
        size = x.shape[dim]
        # (size + s - 1) // s is ceil(size / s) on ints and traced sizes alike; the exporter writes //
        # as a truncating Div, so every operand stays non-negative.
        total = ((size + s - 1) // s - 1) * s + k - size
        most_before, most_after = (k - 1) // 2, k // 2
        parts = [_zeros_along(x, dim, most_before), x, _zeros_along(x, dim, most_after)]
        x = torch.cat([part for part in parts if part is not None], dim)
        x = x.narrow(dim, most_before - total // 2, size + total)
    return x


def _zeros_along(x: torch.Tensor, dim: int, count: int) -> torch.Tensor | None:
    """Zeros shaped like ``x`` except ``count`` long along ``dim`` (None for 0)."""
    if count == 0:
        return None
    shape = list(x.shape)
    shape[dim] = count
    return x.new_zeros(shape)


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TF "SAME" padding computed from the input shape at run time (timm's ``Conv2dSame``:
    the same parameters, the same numbers; see :func:`same_pad` for how it exports)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = False):
        if kernel_size < stride:
            # Then the SAME total pad can be negative (a crop); no network here needs that case.
            raise ValueError(f"SAME padding needs kernel >= stride, got kernel {kernel_size}, stride {stride}")
        super().__init__(in_chs, out_chs, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(same_pad(x, self.kernel_size, self.stride))


def create_conv2d(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                  pad_same: bool = False, bias: bool = False) -> nn.Conv2d:
    """A conv with PyTorch-style symmetric padding, or TF SAME padding where ``pad_same`` asks for it.
    Stride 1 with an odd kernel pads symmetrically under both rules, so it stays a plain Conv2d."""
    if pad_same and (stride > 1 or kernel_size % 2 == 0):
        return Conv2dSame(in_chs, out_chs, kernel_size, stride, groups=groups, bias=bias)
    padding = ((stride - 1) + (kernel_size - 1)) // 2
    return nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=bias)


class DropPath(nn.Module):
    """Stochastic depth on a residual branch: whole samples dropped while training, identity in eval."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


@dataclass(frozen=True)
class BlockOptions:
    """Model-wide settings every block is built with."""

    act_layer: type[nn.Module]
    bn_eps: float = 1e-5
    pad_same: bool = False
    drop_path_rate: float = 0.0
    conv_bias: bool = False  # FBNet-A/B (mobile-vision) give every conv a bias, BN or not

    def conv(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
        return create_conv2d(in_chs, out_chs, kernel_size, stride, groups, self.pad_same, self.conv_bias)


class ConvBnAct(nn.Module):
    """kxk conv -> BN -> act, with an optional residual (``cn``; EfficientNetV2's first stage)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, opts: BlockOptions, skip: bool = False):
        super().__init__()
        self.has_skip = skip and stride == 1 and in_chs == out_chs
        self.conv = opts.conv(in_chs, out_chs, kernel, stride)
        self.bn1 = BatchNormAct2d(out_chs, opts.act_layer, opts.bn_eps)
        self.drop_path = DropPath(opts.drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv(x))
        return self.drop_path(out) + x if self.has_skip else out


class DepthwiseSeparableConv(nn.Module):
    """[channel shuffle ->] dw kxk -> BN-act -> [SE] -> pw 1x1 -> BN[-act] (``ds``/``dsa``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, opts: BlockOptions,
                 se_chs: int = 0, pw_act: bool = False, noskip: bool = False, groups: int = 1):
        super().__init__()
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        self.groups = groups  # of the pw conv; the input channels are shuffled across them first
        self.conv_dw = opts.conv(in_chs, in_chs, kernel, stride, groups=in_chs)
        self.bn1 = BatchNormAct2d(in_chs, opts.act_layer, opts.bn_eps)
        self.se = SqueezeExcite(in_chs, se_chs, opts.act_layer) if se_chs else nn.Identity()
        self.conv_pw = opts.conv(in_chs, out_chs, 1, groups=groups)
        self.bn2 = BatchNormAct2d(out_chs, opts.act_layer if pw_act else None, opts.bn_eps)
        self.drop_path = DropPath(opts.drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channel_shuffle(x, self.groups) if self.groups > 1 else x
        out = self.se(self.bn1(self.conv_dw(out)))
        out = self.bn2(self.conv_pw(out))
        return self.drop_path(out) + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """MBConv: pw 1x1 expand -> BN-act -> dw kxk -> BN-act -> [SE] -> pw 1x1 -> BN (``ir``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, opts: BlockOptions,
                 expansion: float, se_chs: int = 0, noskip: bool = False):
        super().__init__()
        mid_chs = make_divisible(in_chs * expansion)
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        self.conv_pw = opts.conv(in_chs, mid_chs, 1)
        self.bn1 = BatchNormAct2d(mid_chs, opts.act_layer, opts.bn_eps)
        self.conv_dw = opts.conv(mid_chs, mid_chs, kernel, stride, groups=mid_chs)
        self.bn2 = BatchNormAct2d(mid_chs, opts.act_layer, opts.bn_eps)
        self.se = SqueezeExcite(mid_chs, se_chs, opts.act_layer) if se_chs else nn.Identity()
        self.conv_pwl = opts.conv(mid_chs, out_chs, 1)
        self.bn3 = BatchNormAct2d(out_chs, None, opts.bn_eps)
        self.drop_path = DropPath(opts.drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        out = self.se(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return self.drop_path(out) + x if self.has_skip else out


class EdgeResidual(nn.Module):
    """Fused-MBConv: kxk expand -> BN-act -> [SE] -> pw 1x1 -> BN (``er``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, opts: BlockOptions,
                 expansion: float, se_chs: int = 0, noskip: bool = False):
        super().__init__()
        mid_chs = make_divisible(in_chs * expansion)
        self.has_skip = stride == 1 and in_chs == out_chs and not noskip
        self.conv_exp = opts.conv(in_chs, mid_chs, kernel, stride)
        self.bn1 = BatchNormAct2d(mid_chs, opts.act_layer, opts.bn_eps)
        self.se = SqueezeExcite(mid_chs, se_chs, opts.act_layer) if se_chs else nn.Identity()
        self.conv_pwl = opts.conv(mid_chs, out_chs, 1)
        self.bn2 = BatchNormAct2d(out_chs, None, opts.bn_eps)
        self.drop_path = DropPath(opts.drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.se(self.bn1(self.conv_exp(x)))
        out = self.bn2(self.conv_pwl(out))
        return self.drop_path(out) + x if self.has_skip else out


def build_block(block: BlockDef, in_chs: int, out_chs: int, opts: BlockOptions) -> nn.Module:
    """One decoded block at its final (width-scaled) channels."""
    if block.act is not None:
        opts = replace(opts, act_layer=block.act)
    # SE width is a fraction of the block input; the expanded width divided by the expansion is that
    # input up to channel rounding, computed the same way as the reference code.
    mid_chs = in_chs if block.kind in ("ds", "dsa") else make_divisible(in_chs * block.expansion)
    se_chs = round(mid_chs * (block.se_ratio / block.expansion)) if block.se_ratio else 0
    noskip = block.skip is False
    if block.kind == "cn":
        return ConvBnAct(in_chs, out_chs, block.kernel, block.stride, opts, skip=block.skip is True)
    if block.kind in ("ds", "dsa"):
        return DepthwiseSeparableConv(in_chs, out_chs, block.kernel, block.stride, opts, se_chs,
                                      pw_act=block.kind == "dsa", noskip=noskip or block.kind == "dsa",
                                      groups=block.groups)
    block_cls = InvertedResidual if block.kind == "ir" else EdgeResidual
    return block_cls(in_chs, out_chs, block.kernel, block.stride, opts, block.expansion, se_chs, noskip)


# --- the model ----------------------------------------------------------------------------------

# The BN that closes each block's residual branch.
_LAST_NORM = {ConvBnAct: "bn1", DepthwiseSeparableConv: "bn2", InvertedResidual: "bn3", EdgeResidual: "bn2"}


class EfficientNet(nn.Module):
    """conv_stem -> bn1 -> blocks -> conv_head -> bn2 -> global_pool -> classifier.

    ``num_features=0`` leaves out the head conv (MobileNetV1); ``fix_stem`` keeps the stem width
    unscaled (EfficientNet-Lite); ``pad_same`` selects TF SAME padding for TF-ported weights.
    """

    def __init__(self, stages: list[list[BlockDef]], *, stem_size: int = 32, num_features: int = 1280,
                 fix_stem: bool = False, width_multiplier: float = 1.0, channel_divisor: int = 8,
                 round_limit: float = 0.9, act_layer: type[nn.Module] = nn.ReLU, bn_eps: float = 1e-5,
                 pad_same: bool = False, conv_bias: bool = False, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        def scale(channels: int) -> int:
            return round_channels(channels, width_multiplier, channel_divisor, round_limit)

        stem_size = stem_size if fix_stem else scale(stem_size)
        self.conv_stem = create_conv2d(in_chans, stem_size, 3, stride=2, pad_same=pad_same, bias=conv_bias)
        self.bn1 = BatchNormAct2d(stem_size, act_layer, bn_eps)

        total_blocks = sum(len(stage) for stage in stages)
        in_chs, index, built_stages = stem_size, 0, []
        for stage in stages:
            built = []
            for block in stage:
                # Stochastic depth grows linearly with depth, as in the EfficientNet training recipe.
                opts = BlockOptions(act_layer, bn_eps, pad_same, drop_path_rate * index / total_blocks, conv_bias)
                out_chs = scale(block.out_chs)
                built.append(build_block(block, in_chs, out_chs, opts))
                in_chs, index = out_chs, index + 1
            built_stages.append(nn.Sequential(*built))
        self.blocks = nn.Sequential(*built_stages)

        if num_features > 0:
            self.conv_head = create_conv2d(in_chs, num_features, 1, pad_same=pad_same, bias=conv_bias)
            self.bn2 = BatchNormAct2d(num_features, act_layer, bn_eps)
        else:
            self.conv_head, self.bn2, num_features = nn.Identity(), nn.Identity(), in_chs
        self.num_features = num_features
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.drop_rate = drop_rate
        self.classifier = nn.Linear(num_features, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every residual block starts as identity, so a
        # randomly initialised deep variant (V2-L has 79 blocks) stays well-conditioned.
        for m in self.modules():
            if getattr(m, "has_skip", False):
                nn.init.zeros_(getattr(m, _LAST_NORM[type(m)]).weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv_stem(x))
        return self.bn2(self.conv_head(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.global_pool(self.forward_features(x))
        return self.classifier(F.dropout(x, self.drop_rate, self.training))


# --- torchvision checkpoints ----------------------------------------------------------------------

# torchvision's MBConv/FusedMBConv keep their layers in ``block.<j>``: a Conv2dNormActivation (``.0``
# conv, ``.1`` BN) or an SE (``fc1``/``fc2``). The sequence of kinds identifies the block; each child
# maps to our (conv, bn) names or to the SE.
_TV_BLOCK_LAYOUTS: dict[tuple[str, ...], tuple[tuple[str, str] | str, ...]] = {
    ("conv",): (("conv", "bn1"),),  # FusedMBConv, expansion 1 (cn)
    ("conv", "conv"): (("conv_exp", "bn1"), ("conv_pwl", "bn2")),  # FusedMBConv (er)
    ("conv", "se", "conv"): (("conv_dw", "bn1"), "se", ("conv_pw", "bn2")),  # MBConv, expansion 1 (ds)
    ("conv", "conv", "se", "conv"): (("conv_pw", "bn1"), ("conv_dw", "bn2"), "se", ("conv_pwl", "bn3")),  # ir
}
_TV_SE = {"fc1": "se.conv_reduce", "fc2": "se.conv_expand"}


def torchvision_end_key(parts: list[str], head: int) -> str | None:
    """Our key for a torchvision MobileNetV2/EfficientNet key (split on dots) outside the blocks: the
    classifier (Sequential(Dropout, Linear)), the stem ``features.0`` and the head conv
    ``features.<head>`` (Conv2dNormActivation: ``.0`` conv, ``.1`` BN). None for a block's key."""
    if parts[0] == "classifier":
        return f"classifier.{parts[-1]}"
    feature, rest = int(parts[1]), parts[2:]
    if feature not in (0, head):
        return None
    conv, bn = ("conv_stem", "bn1") if feature == 0 else ("conv_head", "bn2")
    return ".".join([conv if rest[0] == "0" else bn, *rest[1:]])


def remap_torchvision_mbconv(state: StateDict) -> dict[str, torch.Tensor]:
    """torchvision EfficientNet / EfficientNetV2 (``features.*``, ``classifier.1``) -> our keys."""
    head = max(int(key.split(".")[1]) for key in state if key.startswith("features."))
    kinds: dict[tuple[str, str], dict[int, str]] = defaultdict(dict)
    for key in state:
        parts = key.split(".")
        if parts[0] == "features" and 0 < int(parts[1]) < head:
            kinds[parts[1], parts[2]][int(parts[4])] = "se" if parts[5] in _TV_SE else "conv"
    remapped = {}
    for key, value in state.items():
        parts = key.split(".")
        if (end := torchvision_end_key(parts, head)) is not None:
            remapped[end] = value
            continue
        stage, rest = int(parts[1]), parts[2:]
        child_kinds = kinds[parts[1], parts[2]]
        layout = _TV_BLOCK_LAYOUTS[tuple(child_kinds[j] for j in sorted(child_kinds))]
        target, tail = layout[int(rest[2])], rest[3:]  # rest = [block_index, "block", j, ...]
        if target == "se":
            name = ".".join([_TV_SE[tail[0]], *tail[1:]])
        else:
            name = ".".join([target[0] if tail[0] == "0" else target[1], *tail[1:]])
        remapped[f"blocks.{stage - 1}.{rest[0]}.{name}"] = value
    return remapped
