"""ShuffleNetV2 + WeightNet.

Paper: "WeightNet: Revisiting the Design Space of Weight Networks" (Ma et al., ECCV 2020).

No library defines it; the authors' code is MegEngine (megvii-model/WeightNet ``weightnet.py``,
``shufflenet_v2.py``). Facts taken from it:

- WeightNet(inp, oup, k, s) replaces a conv by a per-sample kernel: ``x_gap`` (the block's shared
  global mean, through a 1x1 ``reduce`` conv with bias to max(16, inp // 16) channels) -> ``wn_fc1``
  (1x1 conv with bias, M*oup outputs) -> sigmoid -> ``wn_fc2`` (1x1 conv without bias, G*oup groups,
  oup*inp*k*k outputs) -> reshaped into the sample's (oup, inp, k, k) kernel. WeightNet_DW does the same
  for a depthwise k x k kernel (fc1: M/G*inp outputs; fc2: inp groups, inp*k*k outputs). M = G = 2 is
  the README's "WeightNet (1x)"; M/G sets the size of fc2, and the (4x) variant is M = 8, G = 2.
- The block is ShuffleNetV2's with every conv a WeightNet (1x1) or WeightNet_DW (3x3), BN after each,
  ReLU after the 1x1s, one ``x_gap`` per block for all of them. Stride 1 splits the input into its even
  (passthrough) and odd (branch) channels, the megvii ShuffleNetV2 convention, and ends in a plain
  concat (no shuffle after it); stride 2 runs a DW 3x3 s2 -> 1x1 projection beside the branch.
- Widths are reduced from ShuffleNetV2's so FLOPs match the baselines: 0.5x (24, 48, 96, 192, 1024),
  1.0x (24, 112, 224, 448, 1024), 1.5x (24, 176, 352, 704, 1024), 2.0x (24, 248, 496, 992, 1024); 4, 8, 4
  units; the stem and head convs have biases; dropout 0.2 before the classifier of 2.0x only.
- Eval preprocessing (``test.py``): OpenCV BGR image, bilinear resize to 256, center crop 224, 0-255
  pixels with no mean/std normalisation.

Module names are the authors' (``first_conv``, ``features.<i>.wnet1.wn_fc2``, ``bn_proj_1``,
``conv_last``, ``classifier.0``) and every tensor has their element order. MegEngine saves grouped
conv weights 5-D (groups, out/g, in/g, k, k) and biases and BN tensors as (1, C, 1, 1), and has no BN
counter: :func:`remap_megengine` reshapes them (a ``mge.load``-ed state_dict, its numpy arrays as
tensors in a ``.pth``). Parameter counts, which the authors' layout gives exactly (the test builds it
from their code's shape rules): 0.5x 1,463,928, 1.0x 2,435,832, 1.5x 3,915,344, 2.0x 6,198,068,
1.0x (4x) 5,143,896; the README rounds to 1.5M / 2.4M / 3.9M / 6.1M / 5.1M. 0.5x is 2.4% under its
1.5M, inside that figure's rounding (1.45M-1.55M), so its tolerance is 2.5%; the others are within 2%.

Export pitfalls (../shared/families.md):
- P-DYNW: the authors fold the batch into one conv's groups (``groups=B``, with a batch-1 special
  case), which bakes the traced batch into the graph and gives ONNX a Conv whose W is computed. Here
  the kernel is never built per sample. Each of fc2's G*oup groups maps M/G gate channels linearly to
  one input slice (inp/G channels) of one output channel's kernel, so a sample's conv is
  ``sum over (j, m) of gate[b, o, j, m] * conv(x[b, slice j], F[j, m, o])``, where F is fc2's weight
  reshaped. :class:`WeightNet` therefore runs one static grouped conv (G groups, M*oup outputs, fc2's
  weight permuted as its kernel), multiplies by the per-sample gate and sums the M groups of oup
  channels; :class:`WeightNetDW` runs a static depthwise conv with M/G kernels per channel, multiplies
  and sums. Every ONNX Conv has an initializer as W, which INT8 quantizes like any conv weight. What
  stays per-sample is the gate, sigmoid(fc1(x_gap)): a (B, M*oup, 1, 1) scale applied by a Mul. The
  batch is an ordinary dynamic axis and no batch-1 special case is needed: the sums are slices and
  Adds, the gate's reshapes have constant targets with -1 for the batch, and no Shape op is left after
  simplification. Cost: each static conv takes M/G times the MACs of the conv it stands for, while
  the authors' fc2 (kernel generation, no spatial extent) is gone. At 1x that is within 1% of the
  README's FLOPs (0.0406 / 0.1378 / 0.2994 / 0.5579 GMACs against 41M / 139M / 301M / 562M, which
  count fc2); at 4x it is 0.456 GMACs against the README's 141M, the price of a batch-independent
  graph with initializer kernels (the per-sample form would need a MatMul with a computed weight).
- P-SHUF: the stride-1 split is two strided channel slices, not the authors' ``channel_shuffle``, whose
  reshape names the batch.
- P-ADAPT: the authors' ``AvgPool2d(7)`` head assumes 224x224; a global mean is the same there and
  works at any multiple of 32.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import global_avg_pool
from ._registry import StateDict, register_model
from .shufflenetv2 import ShuffleNetV2Config


class KernelConv(nn.Conv2d):
    """A Conv2d that owns no kernel: ``forward(x, weight)`` takes it. WeightNet's kernels are
    rearrangements of the authors' ``wn_fc2.weight``; as a Conv module they export as a plain ONNX Conv
    and the registry's MAC count (hooks on Conv modules) sees them."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, groups: int):
        super().__init__(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        del self.weight  # the kernel lives in the WeightNet's state, under the authors' name

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, weight, None)


def _sum_channel_groups(x: torch.Tensor, groups: int, interleaved: bool) -> torch.Tensor:
    """Sum of ``groups`` channel groups of ``x``: consecutive blocks of C/groups channels, or every
    ``groups``-th channel where ``interleaved``. Slices and Adds: no Reshape that names the batch."""
    if groups == 1:
        return x
    parts = [x[:, i::groups] for i in range(groups)] if interleaved else x.chunk(groups, dim=1)
    return functools.reduce(operator.add, parts)


class _WeightNetBase(nn.Module):
    """The authors' kernel generator (``wn_fc1``, ``sigmoid``, ``wn_fc2``) and the static conv its
    kernels become. Subclasses say how fc2's weight is arranged into that conv's kernel."""

    def __init__(self, gap_chs: int, gate_chs: int, kernel_numel: int, fc2_groups: int, conv: KernelConv):
        super().__init__()
        self.wn_fc1 = nn.Conv2d(gap_chs, gate_chs, 1)
        self.sigmoid = nn.Sigmoid()
        self.wn_fc2 = nn.Conv2d(gate_chs, kernel_numel, 1, groups=fc2_groups, bias=False)
        self.conv = conv

    def gate(self, x_gap: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.wn_fc1(x_gap))


class WeightNet(_WeightNetBase):
    """The authors' ``WeightNet(inp, oup, ksize, stride)`` with their M and G, as a static grouped conv
    and a per-sample gate (module docstring, P-DYNW)."""

    def __init__(self, inp: int, oup: int, kernel_size: int, stride: int, gap_chs: int, m: int = 2, g: int = 2):
        if m % g or inp % g:
            raise ValueError(f"WeightNet needs G to divide M and the input width; got M={m}, G={g}, inp={inp}")
        conv = KernelConv(inp, m * oup, kernel_size, stride, groups=g)
        super().__init__(gap_chs, m * oup, oup * inp * kernel_size**2, g * oup, conv)
        self.oup, self.m, self.g = oup, m, g

    def kernel(self) -> torch.Tensor:
        """fc2's output index is (o, j, i', kh, kw) for input i = j*inp/G + i', its gate inputs m < M/G:
        the kernel of output (j, m, o) of the static conv, group j."""
        k = self.conv.kernel_size[0]
        weight = self.wn_fc2.weight.reshape(self.oup, self.g, -1, k, k, self.m // self.g)
        return weight.permute(1, 5, 0, 2, 3, 4).reshape(self.m * self.oup, -1, k, k)

    def forward(self, x: torch.Tensor, x_gap: torch.Tensor) -> torch.Tensor:
        # The gate's channels are fc2's inputs, (o, j, m); the static conv's outputs are (j, m, o).
        gate = self.gate(x_gap).reshape(-1, self.oup, self.m, 1, 1).transpose(1, 2).reshape(-1, self.m * self.oup, 1, 1)
        return _sum_channel_groups(self.conv(x, self.kernel()) * gate, self.m, interleaved=False)


class WeightNetDW(_WeightNetBase):
    """The authors' ``WeightNet_DW(inp, ksize, stride)``: a static depthwise conv with M/G kernels per
    channel, a per-sample gate, and the sum over each channel's M/G outputs."""

    def __init__(self, channels: int, kernel_size: int, stride: int, gap_chs: int, m: int = 2, g: int = 2):
        if m % g:
            raise ValueError(f"WeightNet needs G to divide M; got M={m}, G={g}")
        ratio = m // g
        conv = KernelConv(channels, ratio * channels, kernel_size, stride, groups=channels)
        super().__init__(gap_chs, ratio * channels, channels * kernel_size**2, channels, conv)
        self.ratio = ratio

    def kernel(self) -> torch.Tensor:
        """fc2's output index is (c, kh, kw), its gate inputs m < M/G: the kernel of output (c, m)."""
        k = self.conv.kernel_size[0]
        weight = self.wn_fc2.weight.reshape(-1, k, k, self.ratio)
        return weight.permute(0, 3, 1, 2).reshape(-1, 1, k, k)

    def forward(self, x: torch.Tensor, x_gap: torch.Tensor) -> torch.Tensor:
        # Gate and conv outputs are both (c, m) ordered.
        out = self.conv(x, self.kernel()) * self.gate(x_gap)
        return _sum_channel_groups(out, self.ratio, interleaved=True)


def split_even_odd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' stride-1 ``channel_shuffle``: the even channels pass through, the odd ones enter the
    branch. Two strided slices, so no reshape names the batch (P-SHUF)."""
    return x[:, 0::2], x[:, 1::2]


class WeightNetShuffleBlock(nn.Module):
    """The authors' ``ShuffleV2Block(inp, oup, mid_channels, ksize=3, stride)``: ``inp`` is the branch's
    input width (half the block's at stride 1); the branch makes ``oup - inp`` channels."""

    def __init__(self, inp: int, oup: int, mid_chs: int, stride: int, m: int, g: int):
        super().__init__()
        self.stride = stride
        branch_chs = oup - inp
        gap_chs = max(16, inp // 16)  # the authors size each fc1 from its own inp: the same in every block
        self.reduce = nn.Conv2d(inp, gap_chs, 1)
        self.wnet1 = WeightNet(inp, mid_chs, 1, 1, gap_chs, m, g)
        self.bn1 = nn.BatchNorm2d(mid_chs)
        self.wnet2 = WeightNetDW(mid_chs, 3, stride, gap_chs, m, g)
        self.bn2 = nn.BatchNorm2d(mid_chs)
        self.wnet3 = WeightNet(mid_chs, branch_chs, 1, 1, gap_chs, m, g)
        self.bn3 = nn.BatchNorm2d(branch_chs)
        self.relu = nn.ReLU(inplace=True)
        if stride == 2:
            self.wnet_proj_1 = WeightNetDW(inp, 3, stride, gap_chs, m, g)
            self.bn_proj_1 = nn.BatchNorm2d(inp)
            self.wnet_proj_2 = WeightNet(inp, inp, 1, 1, gap_chs, m, g)
            self.bn_proj_2 = nn.BatchNorm2d(inp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        passthrough, x = split_even_odd(x) if self.stride == 1 else (x, x)
        x_gap = self.reduce(global_avg_pool(x))
        out = self.relu(self.bn1(self.wnet1(x, x_gap)))
        out = self.bn2(self.wnet2(out, x_gap))
        out = self.relu(self.bn3(self.wnet3(out, x_gap)))
        if self.stride == 2:
            passthrough = self.bn_proj_1(self.wnet_proj_1(passthrough, x_gap))
            passthrough = self.relu(self.bn_proj_2(self.wnet_proj_2(passthrough, x_gap)))
        return torch.cat((passthrough, out), dim=1)


@dataclass(frozen=True)
class WeightNetConfig:
    net: ShuffleNetV2Config  # widths: stem, stage2-4, conv_last
    m: int = 2  # WeightNet's M: gate channels per output channel
    g: int = 2  # WeightNet's G: fc2 groups per output channel; M/G is the README's "1x" / "4x"
    drop_rate: float = 0.0


class WeightNetShuffleNetV2(nn.Module):
    def __init__(self, cfg: WeightNetConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        stem_chs, *stage_chs, head_chs = cfg.net.stage_out_channels
        self.first_conv = nn.Sequential(
            nn.Conv2d(in_chans, stem_chs, 3, 2, 1), nn.BatchNorm2d(stem_chs), nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, in_chs = [], stem_chs
        for repeats, out_chs in zip(cfg.net.stage_repeats, stage_chs, strict=True):
            for index in range(repeats):
                stride = 2 if index == 0 else 1
                inp = in_chs if stride == 2 else in_chs // 2
                blocks.append(WeightNetShuffleBlock(inp, out_chs, out_chs // 2, stride, cfg.m, cfg.g))
                in_chs = out_chs
        self.features = nn.Sequential(*blocks)
        self.conv_last = nn.Sequential(
            nn.Conv2d(in_chs, head_chs, 1), nn.BatchNorm2d(head_chs), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(cfg.drop_rate)
        self.classifier = nn.Sequential(nn.Linear(head_chs, num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.features(self.maxpool(self.first_conv(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(global_avg_pool(self.forward_features(x)).flatten(1)))


def remap_megengine(state: StateDict) -> dict[str, torch.Tensor]:
    """The authors' MegEngine state_dict (same keys) -> ours: grouped conv weights (g, out/g, in/g, k, k)
    flattened to (out, in/g, k, k), (1, C, 1, 1) biases and BN tensors to (C,), BN counters added. No
    conv here has a single output channel, so (1, C, 1, 1) is never a kernel."""
    remapped = {}
    for key, value in state.items():
        value = torch.as_tensor(value)
        if value.dim() == 5:
            value = value.flatten(0, 1)
        elif value.dim() == 4 and value.shape[0] == 1 and value.shape[2:] == (1, 1):
            value = value.flatten()
        remapped[key] = value
        if key.endswith(".running_var"):
            remapped.setdefault(key.removesuffix("running_var") + "num_batches_tracked", torch.tensor(0))
    return remapped


_CONFIGS = {
    "weightnet_shufflenet_v2_x0_5": WeightNetConfig(ShuffleNetV2Config((24, 48, 96, 192, 1024))),
    "weightnet_shufflenet_v2_x1_0": WeightNetConfig(ShuffleNetV2Config((24, 112, 224, 448, 1024))),
    "weightnet_shufflenet_v2_x1_5": WeightNetConfig(ShuffleNetV2Config((24, 176, 352, 704, 1024))),
    "weightnet_shufflenet_v2_x2_0": WeightNetConfig(ShuffleNetV2Config((24, 248, 496, 992, 1024)), drop_rate=0.2),
    "weightnet_shufflenet_v2_x1_0_4x": WeightNetConfig(ShuffleNetV2Config((24, 112, 224, 448, 1024)), m=8),
}


def _create_weightnet(name: str, **overrides) -> WeightNetShuffleNetV2:
    return WeightNetShuffleNetV2(_CONFIGS[name], **overrides)


_PAPER = "Ma et al., WeightNet: Revisiting the Design Space of Weight Networks, ECCV 2020"
# The authors' eval transform: bilinear 256 resize, 224 crop, BGR 0-255 without normalisation.
_SPEC = dict(family="weightnet", paper=_PAPER, interpolation="bilinear", crop_pct=224 / 256, channel_order="BGR",
             pixel_scale=255.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), params_tolerance=0.02,
             remap=remap_megengine)


@register_model(**{**_SPEC, "params_tolerance": 0.025}, reference_params=1_500_000)  # README 1.5M, see docstring
def weightnet_shufflenet_v2_x0_5(**overrides) -> WeightNetShuffleNetV2:
    return _create_weightnet("weightnet_shufflenet_v2_x0_5", **overrides)


@register_model(**_SPEC, reference_params=2_400_000)
def weightnet_shufflenet_v2_x1_0(**overrides) -> WeightNetShuffleNetV2:
    return _create_weightnet("weightnet_shufflenet_v2_x1_0", **overrides)


@register_model(**_SPEC, reference_params=3_900_000)
def weightnet_shufflenet_v2_x1_5(**overrides) -> WeightNetShuffleNetV2:
    return _create_weightnet("weightnet_shufflenet_v2_x1_5", **overrides)


@register_model(**_SPEC, reference_params=6_100_000)
def weightnet_shufflenet_v2_x2_0(**overrides) -> WeightNetShuffleNetV2:
    return _create_weightnet("weightnet_shufflenet_v2_x2_0", **overrides)


@register_model(**_SPEC, reference_params=5_100_000)
def weightnet_shufflenet_v2_x1_0_4x(**overrides) -> WeightNetShuffleNetV2:
    return _create_weightnet("weightnet_shufflenet_v2_x1_0_4x", **overrides)
