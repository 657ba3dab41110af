"""BN-Inception (Inception-v2).

Paper: "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift"
(Ioffe & Szegedy, ICML 2015), the network of its Figure 5 / Table 1.

GoogLeNet with a BatchNorm after every conv, the 5x5 branch replaced by two stacked 3x3s (the "double
3x3" branch), and two stride-2 Inception modules (3c, 4e) in place of GoogLeNet's max pools between
stages. Ten Inception modules of four (three, at stride 2) branches concatenated along the channels.

The weights people deploy are Cadene's port of the Caffe model (``pretrainedmodels.bninception``), so
this definition keeps its flat layer names (``inception_3a_1x1``, ``inception_3a_1x1_bn``, ...): its
state_dict loads as it is, and the exported graph's node names are the Caffe prototxt's. Its convs keep
their Caffe biases in front of the BN, and the BNs PyTorch's default eps (1e-5), as the port has them.

Export notes (../shared/families.md P-CAFFE, P-CEIL):
- P-CAFFE: the weights take BGR pixels in 0-255 minus the Caffe means (104, 117, 128), std 1. The
  spec says so (``channel_order="BGR"``, ``pixel_scale=255.0``), and validation and calibration
  preprocess through it; nothing about it is in the graph.
- P-CEIL: every pool is ceil-mode as in the Caffe model (ONNX ``ceil_mode=1``), and the stride-1
  average pools count the padding (``count_include_pad=1``): a border output is the sum over its
  window divided by 9. The stride-2 max pools have no padding, so no ceil-mode window starts outside
  the input, the case where runtimes have disagreed with PyTorch on the output size.
- Sizes: a stride-2 module concatenates a padded stride-2 conv with an unpadded ceil-mode pool, which
  agree in size only on an even side, so H/8 and H/16 must be even: any multiple of 32 works. The
  head is a global average pool where Cadene's is a fixed 7x7 AvgPool (same result at 224, and no
  P-ADAPT: other sizes get a true global mean instead of failing in the Linear).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import global_avg_pool
from ._registry import register_model


@dataclass(frozen=True)
class InceptionCfg:
    """One Inception module: its name and the output widths of its branches (0: no such branch)."""

    name: str
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    double_reduce: int
    double_3x3: int
    pool: str  # "avg" or "max"
    pool_proj: int  # 0: the pool passes through unprojected
    stride: int = 1


def _pool(kind: str, stride: int) -> nn.Module:
    """A 3x3 ceil-mode pool as Caffe has them. At stride 1 it pads 1 and keeps the size (ceil mode
    changes nothing there); at stride 2 it is unpadded, which gives the padded stride-2 convs' size
    on an even side only."""
    padding = 1 if stride == 1 else 0
    if kind == "max":
        return nn.MaxPool2d(3, stride, padding, ceil_mode=True)
    if kind == "avg":
        return nn.AvgPool2d(3, stride, padding, ceil_mode=True, count_include_pad=True)
    raise ValueError(f"unknown pool kind {kind!r} (expected 'max' or 'avg')")


class BNInception(nn.Module):
    """Stem (7x7/2 conv, pool, 1x1 and 3x3 convs, pool), the Inception modules, global pool, Linear.

    Every conv is followed by a BN and a ReLU: a "unit" below, registered as ``<name>`` (the conv) and
    ``<name>_bn``, Cadene's names.
    """

    def __init__(self, modules: tuple[InceptionCfg, ...], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self._add_unit("conv1_7x7_s2", in_chans, 64, 7, stride=2)
        self.pool1_3x3_s2 = _pool("max", 2)
        self._add_unit("conv2_3x3_reduce", 64, 64, 1)
        self._add_unit("conv2_3x3", 64, 192, 3)
        self.pool2_3x3_s2 = _pool("max", 2)
        channels = 192
        for cfg in modules:
            channels = self._add_inception(cfg, channels)
        self.inception_cfgs = modules
        self.num_features = channels
        self.last_linear = nn.Linear(channels, num_classes)

    def _add_unit(self, name: str, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> int:
        self.add_module(name, nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(out_chs))
        return out_chs

    def _add_inception(self, cfg: InceptionCfg, in_chs: int) -> int:
        """Register one module's layers; returns its output width."""
        prefix = f"inception_{cfg.name}_"
        out_chs = self._add_unit(prefix + "1x1", in_chs, cfg.c1x1, 1) if cfg.c1x1 else 0
        self._add_unit(prefix + "3x3_reduce", in_chs, cfg.c3x3_reduce, 1)
        out_chs += self._add_unit(prefix + "3x3", cfg.c3x3_reduce, cfg.c3x3, 3, cfg.stride)
        self._add_unit(prefix + "double_3x3_reduce", in_chs, cfg.double_reduce, 1)
        self._add_unit(prefix + "double_3x3_1", cfg.double_reduce, cfg.double_3x3, 3)
        out_chs += self._add_unit(prefix + "double_3x3_2", cfg.double_3x3, cfg.double_3x3, 3, cfg.stride)
        self.add_module(prefix + "pool", _pool(cfg.pool, cfg.stride))
        if not cfg.pool_proj:
            return out_chs + in_chs
        return out_chs + self._add_unit(prefix + "pool_proj", in_chs, cfg.pool_proj, 1)

    def _unit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def _inception(self, cfg: InceptionCfg, x: torch.Tensor) -> torch.Tensor:
        """The branches in Cadene's concat order: 1x1, 3x3, double 3x3, pool."""
        prefix = f"inception_{cfg.name}_"
        branches = [self._unit(prefix + "1x1", x)] if cfg.c1x1 else []
        branches.append(self._unit(prefix + "3x3", self._unit(prefix + "3x3_reduce", x)))
        double = self._unit(prefix + "double_3x3_1", self._unit(prefix + "double_3x3_reduce", x))
        branches.append(self._unit(prefix + "double_3x3_2", double))
        pooled = getattr(self, prefix + "pool")(x)
        branches.append(self._unit(prefix + "pool_proj", pooled) if cfg.pool_proj else pooled)
        return torch.cat(branches, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1_3x3_s2(self._unit("conv1_7x7_s2", x))
        x = self.pool2_3x3_s2(self._unit("conv2_3x3", self._unit("conv2_3x3_reduce", x)))
        for cfg in self.inception_cfgs:
            x = self._inception(cfg, x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(global_avg_pool(self.forward_features(x)).flatten(1))


# The paper's Table 1, row by row (Cadene's port has the same widths):
#   name, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, pool projection
# 3c and 4e stride their two 3x3 branches and a max pool, and have no 1x1 branch or projection.
_BN_INCEPTION = (
    InceptionCfg("3a", 64, 64, 64, 64, 96, "avg", 32),
    InceptionCfg("3b", 64, 64, 96, 64, 96, "avg", 64),
    InceptionCfg("3c", 0, 128, 160, 64, 96, "max", 0, stride=2),
    InceptionCfg("4a", 224, 64, 96, 96, 128, "avg", 128),
    InceptionCfg("4b", 192, 96, 128, 96, 128, "avg", 128),
    InceptionCfg("4c", 160, 128, 160, 128, 160, "avg", 128),
    InceptionCfg("4d", 96, 128, 192, 160, 192, "avg", 128),
    InceptionCfg("4e", 0, 128, 192, 192, 256, "max", 0, stride=2),
    InceptionCfg("5a", 352, 192, 320, 160, 224, "avg", 128),
    InceptionCfg("5b", 352, 192, 320, 192, 224, "max", 128),
)


def _create_bninception(**overrides) -> BNInception:
    return BNInception(_BN_INCEPTION, **overrides)


_BN_INCEPTION_PAPER = ("Ioffe & Szegedy, Batch Normalization: Accelerating Deep Network Training by Reducing "
                       "Internal Covariate Shift, ICML 2015")


# Cadene's eval transform (P-CAFFE): bilinear resize to 256, center crop 224, BGR, 0-255, minus the
# Caffe means. Sizes: multiples of 32 from 32 up (see the module docstring).
@register_model(family="bninception", paper=_BN_INCEPTION_PAPER, mean=(104.0, 117.0, 128.0),
                std=(1.0, 1.0, 1.0), crop_pct=0.875, channel_order="BGR", pixel_scale=255.0,
                reference_params=11_295_240, size_divisor=32, min_size=32)
def bninception(**overrides) -> BNInception:
    return _create_bninception(**overrides)
