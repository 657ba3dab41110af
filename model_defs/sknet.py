"""SKNet: Selective Kernel ResNets and ResNeXt.

Paper: "Selective Kernel Networks" (Li et al., CVPR 2019; arXiv:1903.06586).

A selective-kernel conv runs two 3x3 convs side by side, the paper's 3x3 and 5x5 ("split"), pools
their sum to one vector ("fuse"), squeezes it through a 1x1 conv, BN and ReLU, and expands it to one
logit per path and channel; a softmax across the paths weights each path's map, and the output is the
weighted sum ("select"). The trunk is :class:`model_defs.resnet.ResNet` with timm's SK blocks: in the
basic blocks (SK-ResNet-18/34) the first 3x3 is the SK conv, in the bottlenecks (SK-ResNet-50 and the
paper's SKNet-50, ``skresnext50_32x4d``) the grouped 3x3 is. The module names are timm's
(``layer1.0.conv1.paths.1.conv``, ``layer1.0.conv1.attn.fc_select``, ``layer2.0.downsample.1``), so its
checkpoints load without a remap. timm's variants differ from the paper in two ways kept here:
- the SK-ResNets split the input channels between the paths (``split_input``: each path sees half of
  them), which keeps their parameters near plain ResNet's; SKNet-50 feeds the whole input to both;
- the squeeze is ``rd_ratio`` of the channels rounded to a multiple of ``rd_divisor`` (1/8 and 16 for
  the basic blocks, 1/16 and 8 for SK-ResNet-50, 1/16 and 32 for SKNet-50), where the paper has C/16, at
  least 32.

Export notes (../shared/families.md, SKNet rows):
- P-5D: timm stacks the paths into a (B, paths, C, H, W) tensor, views the logits as
  (B, paths, C, 1, 1) and takes the softmax over axis 1. Here the paths stay separate (B, C, H, W)
  maps and no tensor has five axes: the logits are reshaped to (B, paths, C) with a constant shape, -1
  for the batch, the Softmax runs on axis 1 as timm's does, and the weights are reshaped back and split
  into one (B, C, 1, 1) chunk per path (fc_select's channels run path-major, as timm's view reads
  them). The input split of ``split_input`` is a Split by a Python int, never a traced size
  (zhanghang1989/ResNeSt#67). ``tests/test_family_sknet.py`` checks the graph on ONNX Runtime at batch
  1 and 3.
- The paper's 5x5 path is timm's ``keep_3x3`` form: a 3x3 conv with dilation 2 and padding 2, the
  same receptive field from 9 weights, which timm's checkpoints hold (ONNX Conv ``dilations=[2, 2]``).
- Fuse pools each path and adds the (B, C, 1, 1) means, where timm pools the sum: the same vector
  (mean is linear), without a full-size Add that nothing else reads.
- P-ADAPT does not apply: the only adaptive pool is the global one, so any multiple of 32 from 32 up
  is a valid ``--img-size`` (at 32 px the dilated path pads the last 1x1 map with zeros, as timm does).
- Initialisation: timm builds every SK variant with ``zero_init_last=False``, so the blocks here have no
  ``zero_init_last`` hook and ResNet's trunk leaves their last BN at 1. On the seeded random weights
  that drift is measured on, the residual branches and the kernel attention are then live; with the
  trunk's zero init they would add nothing, and the softmax would never reach an output.
"""

from __future__ import annotations

import functools
import operator
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, ConvNormAct, global_avg_pool, make_divisible
from ._registry import register_model
from .resnet import ResNet

# The paths' dilations: the paper's 3x3 and 5x5 kernels as 3x3s (timm's keep_3x3), dilation (k - 1) // 2.
_PATH_DILATIONS = (1, 2)


def _sum(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Elementwise sum without Python's ``sum``, whose start value 0 would trace as one more Add."""
    return functools.reduce(operator.add, tensors)


class SelectiveKernelAttn(nn.Module):
    """Select: the fused (B, C, 1, 1) vector -> per-path softmax weights, (B, paths * C, 1, 1) with the
    channels path-major. No biases in the two 1x1 convs: BN follows the first, the softmax the second."""

    def __init__(self, channels: int, num_paths: int, attn_channels: int):
        super().__init__()
        self.channels, self.num_paths = channels, num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(attn_channels)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, 1, bias=False)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        logits = self.fc_select(self.act(self.bn(self.fc_reduce(fused))))
        # timm's (B, paths, C, 1, 1) view without its unit axes: constant shapes, the batch the only -1.
        weights = logits.reshape(-1, self.num_paths, self.channels).softmax(dim=1)
        return weights.reshape(-1, self.num_paths * self.channels, 1, 1)


def _path(in_ch: int, out_ch: int, stride: int, dilation: int, groups: int) -> nn.Sequential:
    """One path: 3x3 conv (padding = dilation keeps the size) -> BN -> ReLU, under the ``conv``/``bn``
    names of timm's ConvNormAct (whose shared form here, ``_layers.ConvNormAct``, takes no dilation)."""
    conv = nn.Conv2d(in_ch, out_ch, 3, stride, dilation, dilation, groups, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=BatchNormAct2d(out_ch)))


class SelectiveKernel(nn.Module):
    """The selective-kernel conv, ``in_ch`` -> ``out_ch`` at ``stride``, each path grouped by ``groups``.
    ``split_input`` gives each path its own chunk of the input channels; the squeeze width is
    ``out_ch * rd_ratio`` rounded to a multiple of ``rd_divisor`` (at least ``rd_divisor``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, groups: int = 1, *, rd_ratio: float = 1 / 16,
                 rd_divisor: int = 8, split_input: bool = True):
        super().__init__()
        num_paths = len(_PATH_DILATIONS)
        if split_input and in_ch % num_paths:
            raise ValueError(f"split_input needs input channels divisible by {num_paths}; got {in_ch}")
        self.split_input, self.out_ch = split_input, out_ch
        self.path_in = in_ch // num_paths if split_input else in_ch
        self.paths = nn.ModuleList(_path(self.path_in, out_ch, stride, d, groups) for d in _PATH_DILATIONS)
        self.attn = SelectiveKernelAttn(out_ch, num_paths, make_divisible(out_ch * rd_ratio, rd_divisor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x.split(self.path_in, dim=1) if self.split_input else [x] * len(self.paths)
        maps = [path(chunk) for path, chunk in zip(self.paths, inputs, strict=True)]
        weights = self.attn(_sum(global_avg_pool(m) for m in maps)).split(self.out_ch, dim=1)
        return _sum(m * w for m, w in zip(maps, weights, strict=True))


class SelectiveKernelBasic(nn.Module):
    """ResNet's basic block with its first 3x3 as the selective-kernel conv (which carries the stride)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, **sk_args):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("SelectiveKernelBasic takes groups=1 and base_width=64 only")
        self.conv1 = SelectiveKernel(in_ch, planes, stride, **sk_args)
        self.conv2 = ConvNormAct(planes, planes, 3, act_layer=None)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv2(self.conv1(x)) + shortcut)


class SelectiveKernelBottleneck(nn.Module):
    """1x1 -> selective-kernel conv (grouped 3x3s, stride) -> 1x1, plus the shortcut."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, **sk_args):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = ConvNormAct(in_ch, width, 1)
        self.conv2 = SelectiveKernel(width, width, stride, groups, **sk_args)
        self.conv3 = ConvNormAct(width, planes * self.expansion, 1, act_layer=None)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act(self.conv3(self.conv2(self.conv1(x))) + shortcut)


def _create_sknet(name: str, **overrides) -> ResNet:
    cfg = _CONFIGS[name]
    sk_args = dict(rd_ratio=cfg.rd_ratio, rd_divisor=cfg.rd_divisor, split_input=cfg.split_input)
    return ResNet(cfg.block, cfg.layers, groups=cfg.groups, base_width=cfg.base_width, block_args=sk_args,
                  **overrides)


@dataclass(frozen=True)
class SKNetConfig:
    block: type[SelectiveKernelBasic | SelectiveKernelBottleneck]
    layers: tuple[int, int, int, int]  # blocks per stage
    groups: int = 1  # cardinality of the paths' 3x3s
    base_width: int = 64  # 3x3 channels per group at the first stage (ResNeXt's "4d": 4)
    rd_ratio: float = 1 / 16  # attention squeeze width, as a fraction of the SK conv's output channels
    rd_divisor: int = 8  # ... rounded to a multiple of this
    split_input: bool = True  # True: each path convolves its own half of the input channels


_CONFIGS = {
    "skresnet18": SKNetConfig(SelectiveKernelBasic, (2, 2, 2, 2), rd_ratio=1 / 8, rd_divisor=16),
    "skresnet34": SKNetConfig(SelectiveKernelBasic, (3, 4, 6, 3), rd_ratio=1 / 8, rd_divisor=16),
    "skresnet50": SKNetConfig(SelectiveKernelBottleneck, (3, 4, 6, 3)),
    "skresnext50_32x4d": SKNetConfig(SelectiveKernelBottleneck, (3, 4, 6, 3), groups=32, base_width=4,
                                     rd_divisor=32, split_input=False),
}

# timm evaluates its SK weights (skresnet18/34 and skresnext50_32x4d .ra_in1k) with a bicubic resize and
# crop 0.875; skresnet50 has no weights and shares that configuration.
_SKNET = dict(family="sknet", paper="Li et al., Selective Kernel Networks, CVPR 2019 (arXiv:1903.06586)",
              interpolation="bicubic")


@register_model(**_SKNET, reference="timm:skresnet18", reference_params=11_958_056)
def skresnet18(**overrides) -> ResNet:
    return _create_sknet("skresnet18", **overrides)


@register_model(**_SKNET, reference="timm:skresnet34", reference_params=22_282_376)
def skresnet34(**overrides) -> ResNet:
    return _create_sknet("skresnet34", **overrides)


@register_model(**_SKNET, reference="timm:skresnet50", reference_params=25_803_160)
def skresnet50(**overrides) -> ResNet:
    return _create_sknet("skresnet50", **overrides)


# The paper's SKNet-50 (ResNeXt-50 32x4d with selective kernels).
@register_model(**_SKNET, reference="timm:skresnext50_32x4d", reference_params=27_479_784)
def skresnext50_32x4d(**overrides) -> ResNet:
    return _create_sknet("skresnext50_32x4d", **overrides)
