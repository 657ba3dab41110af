"""NASNet-A.

Paper: "Learning Transferable Architectures for Scalable Image Recognition" (Zoph et al., CVPR 2018).

A searched cell repeated N times per stage: a normal cell keeps the resolution, a reduction cell
halves it; each cell combines the outputs of the two previous cells through five pairs of separable
convs and 3x3 pools. Large is "6 @ 4032" (N=6, 4032 penultimate channels), Mobile "4 @ 1056".

Module names are timm's ``nasnetalarge`` and Cadene's ``nasnet_mobile.py`` (the two agree on every
parameter name), so timm's Large and Cadene's Mobile checkpoints load without a remap. Cadene numbers
the cells of every stage from ``6 * stage`` as Large does, so Mobile has no ``cell_4``/``cell_5``.

Export notes (../shared/families.md P-SAME, P-NEGPAD):
- The weights come from TensorFlow, whose "SAME" padding is asymmetric at stride 2 on an even side.
  The pads are computed from the input's static size as Python ints, so they fold into constants and
  the exported graph has no Shape subgraph; any input size works (re-export per size).
- Every Pad in the graph is a zero, non-negative Pad (see ``_tf_same`` and ``OddPixelGrid``).
- Stride-1 average pools exclude the padding (ONNX AveragePool ``count_include_pad=0``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._registry import INCEPTION_MEAN, INCEPTION_STD, register_model


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # TF's epsilon, kept by both ports


def _static_size(x: torch.Tensor) -> tuple[int, int]:
    """H and W as Python ints. Under ONNX tracing they become constants (H and W are static in every
    export, only the batch may be dynamic), so pads derived from them emit no Shape subgraph."""
    height, width = x.shape[-2:]
    return int(height), int(width)


def _tf_same(layer: nn.Module, x: torch.Tensor, stride: int) -> torch.Tensor:
    """Run ``layer`` (odd kernel k, built with PyTorch's symmetric padding k // 2) with TF "SAME" padding.

    At stride 1, and at stride 2 on an odd side, SAME pads k // 2 on both ends: the layer as built.
    At stride 2 on an even side SAME pads one less at the start. As in Cadene's port, one zero row
    (column) goes in front, the layer runs, and its first output row (column) is dropped. For a conv
    the extra zero is padding either way; for the 3x3 pools no kept window reaches it. This keeps the
    graph to zero Pads, the pools' own padding (max pools: -inf; average pools: excluded or counted as
    the pool says) and a Slice, which every TensorRT parser takes; a -inf Pad would not be (TensorRT 7
    parsed constant-0 Pads only: NVIDIA/TensorRT#1019).
    """
    if stride == 1:
        return layer(x)
    height, width = _static_size(x)
    shift_h, shift_w = 1 - height % 2, 1 - width % 2
    if not (shift_h or shift_w):
        return layer(x)
    return layer(F.pad(x, (shift_w, 0, shift_h, 0)))[:, :, shift_h:, shift_w:]


class SamePool(nn.Module):
    """3x3 max or average pool with TF "SAME" padding."""

    def __init__(self, kind: str, stride: int, count_include_pad: bool = False):
        super().__init__()
        self.stride = stride
        if kind == "max":
            self.pool = nn.MaxPool2d(3, stride, 1)
        elif kind == "avg":
            self.pool = nn.AvgPool2d(3, stride, 1, count_include_pad=count_include_pad)
        else:
            raise ValueError(f"unknown pool kind {kind!r} (expected 'max' or 'avg')")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _tf_same(self.pool, x, self.stride)


class ActConvBn(nn.Module):
    """ReLU -> 1x1 conv -> BN: how every cell brings an input to its working width."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = _bn(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.act(x)))


class SeparableConv2d(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise_conv2d = nn.Conv2d(in_chs, in_chs, kernel_size, stride, kernel_size // 2, groups=in_chs,
                                          bias=False)
        self.pointwise_conv2d = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv2d(_tf_same(self.depthwise_conv2d, x, self.stride))


class BranchSeparables(nn.Module):
    """(ReLU -> separable conv -> BN) twice; only the first may stride. Stem cells widen in the first
    separable conv (middle = out channels), every other cell in the second (middle = in channels)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, stem_cell: bool = False):
        super().__init__()
        middle_chs = out_chs if stem_cell else in_chs
        self.act_1 = nn.ReLU()
        self.separable_1 = SeparableConv2d(in_chs, middle_chs, kernel_size, stride)
        self.bn_sep_1 = _bn(middle_chs)
        self.act_2 = nn.ReLU()
        self.separable_2 = SeparableConv2d(middle_chs, out_chs, kernel_size, 1)
        self.bn_sep_2 = _bn(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_sep_1(self.separable_1(self.act_1(x)))
        return self.bn_sep_2(self.separable_2(self.act_2(x)))


class OddPixelGrid(nn.Module):
    """Every second pixel from the second row and column on, zero-padded on an odd side to the size of
    the even grid (ceil(H/2) x ceil(W/2)) that ``path_1`` samples.

    timm writes this as ``ZeroPad2d((-1, 1, -1, 1))`` and a 1x1 stride-2 average pool. The negative pad
    exports as an ONNX Pad with negative pads, which TensorRT's ONNX parser has rejected ("Failed to
    convert padding!", onnx/onnx-tensorrt#847); a strided Slice plus a plain zero Pad computes the same
    and parses everywhere. (A Pad followed by a 1x1 pool also gets fused by onnxsim into a pool whose
    pad is not smaller than its kernel, which ONNX Runtime refuses to load.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = _static_size(x)
        x = x[:, :, 1::2, 1::2]
        return F.pad(x, (0, width % 2, 0, height % 2)) if height % 2 or width % 2 else x


class _Cell(nn.Module):
    def _add_factorized_reduction(self, in_chs: int, out_chs: int) -> None:
        """The previous cell's output is at twice this cell's resolution: two stride-2 1x1 convs, one
        on the even and one on the odd pixel grid, each giving half of ``out_chs``."""
        self.act = nn.ReLU()
        self.path_1 = nn.Sequential(OrderedDict(
            avgpool=nn.AvgPool2d(1, 2),
            conv=nn.Conv2d(in_chs, out_chs // 2, 1, bias=False),
        ))
        self.path_2 = nn.Sequential(OrderedDict(
            odd_grid=OddPixelGrid(),
            conv=nn.Conv2d(in_chs, out_chs // 2, 1, bias=False),
        ))
        self.final_path_bn = _bn(out_chs)

    def _factorized_reduction(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.final_path_bn(torch.cat([self.path_1(x), self.path_2(x)], 1))


class _ReductionCell(_Cell):
    """The reduction cell's five combinations of ``a`` (at ``channels``) and ``b`` (``b_chs``); the
    output concatenates the last four, 4 * ``channels`` at half the resolution.

    ``avg_counts_pad``: whether the stride-2 average pool averages in its padding zeros. TF does not,
    and neither does Cadene's port; timm pads outside the pool, so its ``nasnetalarge`` does.
    """

    def _add_combinations(self, b_chs: int, channels: int, avg_counts_pad: bool, stem_cell: bool = False) -> None:
        self.comb_iter_0_left = BranchSeparables(channels, channels, 5, 2)
        self.comb_iter_0_right = BranchSeparables(b_chs, channels, 7, 2, stem_cell)
        self.comb_iter_1_left = SamePool("max", 2)
        self.comb_iter_1_right = BranchSeparables(b_chs, channels, 7, 2, stem_cell)
        self.comb_iter_2_left = SamePool("avg", 2, count_include_pad=avg_counts_pad)
        self.comb_iter_2_right = BranchSeparables(b_chs, channels, 5, 2, stem_cell)
        self.comb_iter_3_right = SamePool("avg", 1)
        self.comb_iter_4_left = BranchSeparables(channels, channels, 3, 1)
        self.comb_iter_4_right = SamePool("max", 2)

    def _combine(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        comb_0 = self.comb_iter_0_left(a) + self.comb_iter_0_right(b)
        comb_1 = self.comb_iter_1_left(a) + self.comb_iter_1_right(b)
        comb_2 = self.comb_iter_2_left(a) + self.comb_iter_2_right(b)
        comb_3 = self.comb_iter_3_right(comb_0) + comb_1
        comb_4 = self.comb_iter_4_left(comb_0) + self.comb_iter_4_right(a)
        return torch.cat([comb_1, comb_2, comb_3, comb_4], 1)


class CellStem0(_ReductionCell):
    """First reduction, on the stem conv's output alone."""

    def __init__(self, stem_chs: int, channels: int, avg_counts_pad: bool):
        super().__init__()
        self.conv_1x1 = ActConvBn(stem_chs, channels)
        self._add_combinations(stem_chs, channels, avg_counts_pad, stem_cell=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._combine(self.conv_1x1(x), x)


class CellStem1(_ReductionCell):
    """Second reduction: ``x`` from CellStem0, ``x_prev`` (the stem conv) at twice its resolution."""

    def __init__(self, in_chs: int, prev_chs: int, channels: int, avg_counts_pad: bool):
        super().__init__()
        self.conv_1x1 = ActConvBn(in_chs, channels)
        self._add_factorized_reduction(prev_chs, channels)
        self._add_combinations(channels, channels, avg_counts_pad)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        return self._combine(self.conv_1x1(x), self._factorized_reduction(x_prev))


class ReductionCell(_ReductionCell):
    def __init__(self, in_chs: int, prev_chs: int, channels: int, avg_counts_pad: bool):
        super().__init__()
        self.conv_prev_1x1 = ActConvBn(prev_chs, channels)
        self.conv_1x1 = ActConvBn(in_chs, channels)
        self._add_combinations(channels, channels, avg_counts_pad)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        return self._combine(self.conv_1x1(x), self.conv_prev_1x1(x_prev))


class NormalCell(_Cell):
    """Five combinations of ``x`` and ``x_prev`` (both at ``channels``), concatenated with ``x_prev``:
    6 * ``channels`` out. The first cell of a stage gets ``x_prev`` at twice the resolution (from
    before the reduction) and halves it (timm's and Cadene's ``FirstCell``)."""

    def __init__(self, in_chs: int, prev_chs: int, channels: int, prev_is_larger: bool):
        super().__init__()
        self.prev_is_larger = prev_is_larger
        if prev_is_larger:
            self._add_factorized_reduction(prev_chs, channels)
        else:
            self.conv_prev_1x1 = ActConvBn(prev_chs, channels)
        self.conv_1x1 = ActConvBn(in_chs, channels)
        self.comb_iter_0_left = BranchSeparables(channels, channels, 5)
        self.comb_iter_0_right = BranchSeparables(channels, channels, 3)
        self.comb_iter_1_left = BranchSeparables(channels, channels, 5)
        self.comb_iter_1_right = BranchSeparables(channels, channels, 3)
        self.comb_iter_2_left = SamePool("avg", 1)
        self.comb_iter_3_left = SamePool("avg", 1)
        self.comb_iter_3_right = SamePool("avg", 1)
        self.comb_iter_4_left = BranchSeparables(channels, channels, 3)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        prev = self._factorized_reduction(x_prev) if self.prev_is_larger else self.conv_prev_1x1(x_prev)
        x = self.conv_1x1(x)
        comb_0 = self.comb_iter_0_left(x) + self.comb_iter_0_right(prev)
        comb_1 = self.comb_iter_1_left(prev) + self.comb_iter_1_right(prev)
        comb_2 = self.comb_iter_2_left(x) + prev
        comb_3 = self.comb_iter_3_left(prev) + self.comb_iter_3_right(prev)
        comb_4 = self.comb_iter_4_left(x) + x
        return torch.cat([prev, comb_0, comb_1, comb_2, comb_3, comb_4], 1)


class NASNetA(nn.Module):
    """Stem conv, two stem reduction cells, then three stages of ``cells_per_stage`` normal cells
    with a reduction cell between stages; stage widths are ``num_features / 24`` times 1, 2, 4."""

    def __init__(self, stem_size: int, num_features: int, cells_per_stage: int, skip_reduction: bool,
                 avg_counts_pad: bool, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0):
        super().__init__()
        # Keras' `skip_reduction` (TF-slim's `skip_reduction_layer_input`): the cell after a reduction
        # takes as its second input the reduction's own second input (Large) or its first (Mobile).
        self.skip_reduction = skip_reduction
        width = num_features // 24
        self.conv0 = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, stem_size, 3, 2, bias=False),  # TF "VALID"
            bn=_bn(stem_size),
        ))
        self.cell_stem_0 = CellStem0(stem_size, width // 4, avg_counts_pad)
        stem_0_chs = 4 * (width // 4)
        self.cell_stem_1 = CellStem1(stem_0_chs, stem_size, width // 2, avg_counts_pad)
        prev_chs, in_chs = stem_0_chs, 4 * (width // 2)
        self.cell_names: list[str] = []
        for stage in range(3):
            channels = width * 2**stage
            if stage > 0:
                name = f"reduction_cell_{stage - 1}"
                self.add_module(name, ReductionCell(in_chs, prev_chs, channels, avg_counts_pad))
                self.cell_names.append(name)
                prev_chs, in_chs = (prev_chs if skip_reduction else in_chs), 4 * channels
            for i in range(cells_per_stage):
                name = f"cell_{6 * stage + i}"
                self.add_module(name, NormalCell(in_chs, prev_chs, channels, prev_is_larger=i == 0))
                self.cell_names.append(name)
                prev_chs, in_chs = in_chs, 6 * channels
        self.num_features = in_chs
        self.act = nn.ReLU()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.last_linear = nn.Linear(in_chs, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x_conv0 = self.conv0(x)
        x_prev = self.cell_stem_0(x_conv0)
        x = self.cell_stem_1(x_prev, x_conv0)
        for name in self.cell_names:
            cell = getattr(self, name)
            out = cell(x, x_prev)
            if isinstance(cell, ReductionCell) and self.skip_reduction:
                x = out  # x_prev stays: the next cell skips over the reduction's input
            else:
                x_prev, x = x, out
        return self.act(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.global_pool(self.forward_features(x)), 1)
        return self.last_linear(self.head_drop(x))


@dataclass(frozen=True)
class NASNetConfig:
    stem_size: int
    num_features: int
    cells_per_stage: int
    skip_reduction: bool
    avg_counts_pad: bool


_CONFIGS = {
    "nasnetalarge": NASNetConfig(stem_size=96, num_features=4032, cells_per_stage=6, skip_reduction=True,
                                 avg_counts_pad=True),
    "nasnetamobile": NASNetConfig(stem_size=32, num_features=1056, cells_per_stage=4, skip_reduction=False,
                                  avg_counts_pad=False),
}


def _create_nasnet(name: str, **overrides) -> NASNetA:
    cfg = _CONFIGS[name]
    return NASNetA(cfg.stem_size, cfg.num_features, cfg.cells_per_stage, cfg.skip_reduction, cfg.avg_counts_pad,
                   **overrides)


_NASNET = "Zoph et al., Learning Transferable Architectures for Scalable Image Recognition, CVPR 2018"


# SAME padding takes any input size: no stride divisibility (size_divisor=1).
@register_model(family="nasnet", paper=_NASNET, input_size=(3, 331, 331), mean=INCEPTION_MEAN, std=INCEPTION_STD,
                interpolation="bicubic", crop_pct=0.911, reference="timm:nasnetalarge", reference_params=88_753_150,
                size_divisor=1)
def nasnetalarge(**overrides) -> NASNetA:
    return _create_nasnet("nasnetalarge", **overrides)


# Cadene's eval transform: bilinear resize to 256, center crop 224.
@register_model(family="nasnet", paper=_NASNET, mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.875,
                reference_params=5_289_978, size_divisor=1)
def nasnetamobile(**overrides) -> NASNetA:
    return _create_nasnet("nasnetamobile", **overrides)
