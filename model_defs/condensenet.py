"""CondenseNet-74, converted (inference) form.

Paper: "CondenseNet: An Efficient DenseNet using Learned Group Convolutions" (Huang et al., CVPR 2018).

Neither timm nor torchvision defines it. The architecture follows the authors' code,
ShichenLiu/CondenseNet ``models/condensenet_converted.py`` and ``layers.py``, whose module names this
file keeps (``features.init_conv``, ``features.denseblock_1.denselayer_1.conv_1.index``,
``features.norm_last``, ``classifier.linear``), so their converted checkpoints load (the exporter strips
their DataParallel ``module.`` prefix; :func:`remap_condensenet` adds the BatchNorm counters those
2017 files predate). Facts taken from that code and its ImageNet command line (``--stages 4-6-8-10-8
--growth 8-16-32-64-128 --bottleneck 4 --group-1x1 G --group-3x3 G --condense-factor C``):

- stem: a bias-free 3x3/2 conv to 2 * growth[0] = 16 channels, with no BN (each dense layer opens with one);
- dense layer: [index gather -> BN-ReLU -> 1x1 conv in G groups to 4k -> channel shuffle (G)], then
  [BN-ReLU -> 3x3 conv in G groups to k], concatenated to the layer's input;
- between blocks a bare AvgPool 2x2/2 (no transition conv); after the last block BN-ReLU;
- head: the authors' ``AvgPool2d(7)``, then ``CondenseLinear``: an index gather keeping half of the
  2064 features, then a Linear.

Training learns which input channels each group of a 1x1 conv keeps (learned group convolution, a
mask over a dense 1x1); converting condenses each to a gather of the kept channels feeding a plain
grouped conv, so the training model's masks (11.92M dense parameters for C=G=4) never reach this one.
With C = G, as in both variants, the gather keeps ``in * G / C = in`` indices (a channel may repeat,
another be dropped): every group reads ``in / C`` of them.

Export notes (../shared/families.md, CondenseNet rows):
- P-IDXSEL: each gather is ``torch.index_select(x, 1, index)``, one ONNX Gather (axis 1) whose indices
  are an initializer: the activations carry the dynamic batch, the indices are a constant. The
  authors allocate ``index`` with ``torch.LongTensor(n)``, uninitialised until a checkpoint is loaded
  (exporting one gave "INDICES element is out of DATA bounds"); here the buffers are filled when the
  model is built, from its shape alone, not from the random seed (:func:`_group_spread_index`,
  :func:`_even_spread_index`). They stay persistent buffers, so a checkpoint's indices replace them.
- P-SHUF: the shuffle after each grouped 1x1 is the authors' ``ShuffleLayer``, a (G, C/G) view and a
  transpose (:func:`channel_shuffle`), the convention their weights were condensed with. Their version
  reads the shape from ``x.data.size()``, which bakes the batch into the graph; ours names only the
  channel axis.
- Head pooling: the authors' ``AvgPool2d(7)`` is a global mean at 224 only (7x7 map); a global average
  pool is the same there and takes any size (P-ADAPT does not apply). The four 2x2 pools are in floor
  mode, so any side from 31 up exports (the stem rounds up, ceil(31 / 2) = 16 = 2^4).
- Dropout (``--dropout-rate``) is 0 in the ImageNet runs and only ever sat in the training model: left out.

Parameter counts were produced by instantiating the authors' converted model (../shared/families.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, channel_shuffle, global_avg_pool
from ._registry import StateDict, register_model


def _group_spread_index(in_chs: int, kept: int, groups: int) -> torch.Tensor:
    """Stand-in indices for random weights: group i of the conv reads channels i, i + G, i + 2G, ...
    (a permutation of the channels where ``kept == in_chs``), so the gather is not the identity."""
    return torch.arange(kept).view(-1, groups).t().flatten() % in_chs


def _even_spread_index(in_features: int, kept: int) -> torch.Tensor:
    """Stand-in indices for random weights: ``kept`` features evenly spread (every other one at 0.5)."""
    return torch.arange(kept) * in_features // kept


class CondenseConv(nn.Module):
    """A condensed learned group convolution: gather the kept channels -> BN-ReLU -> 1x1 conv in
    ``groups`` groups -> channel shuffle, which interleaves the groups' outputs as the training
    model's dense 1x1 had them."""

    def __init__(self, in_chs: int, out_chs: int, groups: int, condense_factor: int):
        super().__init__()
        kept = in_chs * groups // condense_factor
        self.groups = groups
        self.register_buffer("index", _group_spread_index(in_chs, kept, groups))
        self.norm = BatchNormAct2d(kept)
        self.conv = nn.Conv2d(kept, out_chs, 1, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.norm(torch.index_select(x, 1, self.index)))
        return channel_shuffle(x, self.groups)


class GroupConv(nn.Sequential):
    """BN-ReLU -> 3x3 conv in ``groups`` groups (the authors' ``Conv``)."""

    def __init__(self, in_chs: int, out_chs: int, groups: int):
        super().__init__(OrderedDict([
            ("norm", BatchNormAct2d(in_chs)),
            ("conv", nn.Conv2d(in_chs, out_chs, 3, padding=1, groups=groups, bias=False)),
        ]))


class CondenseLinear(nn.Module):
    """Gather the kept ``keep * in_features`` features, then a Linear."""

    def __init__(self, in_features: int, num_classes: int, keep: float = 0.5):
        super().__init__()
        kept = int(in_features * keep)
        self.register_buffer("index", _even_spread_index(in_features, kept))
        self.linear = nn.Linear(kept, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.index_select(x, 1, self.index))


class DenseLayer(nn.Module):
    def __init__(self, in_chs: int, growth_rate: int, bottleneck: int, groups: int, condense_factor: int):
        super().__init__()
        self.conv_1 = CondenseConv(in_chs, bottleneck * growth_rate, groups, condense_factor)
        self.conv_2 = GroupConv(bottleneck * growth_rate, growth_rate, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv_2(self.conv_1(x))], 1)


class CondenseNet(nn.Module):
    def __init__(self, stages: tuple[int, ...], growth: tuple[int, ...], groups: int, condense_factor: int,
                 bottleneck: int = 4, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        chs = 2 * growth[0]
        self.features = nn.Sequential(OrderedDict([("init_conv", nn.Conv2d(in_chans, chs, 3, 2, 1, bias=False))]))
        for i, (num_layers, k) in enumerate(zip(stages, growth, strict=True)):
            block = nn.Sequential(OrderedDict(
                (f"denselayer_{j + 1}", DenseLayer(chs + j * k, k, bottleneck, groups, condense_factor))
                for j in range(num_layers)
            ))
            self.features.add_module(f"denseblock_{i + 1}", block)
            chs += num_layers * k
            if i != len(stages) - 1:
                self.features.add_module(f"transition_{i + 1}", nn.AvgPool2d(2, 2))
        self.features.add_module("norm_last", BatchNormAct2d(chs))
        self.num_features = chs
        self.classifier = CondenseLinear(chs, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors': normal(0, sqrt(2 / (k * k * out_channels))) convs (Kaiming fan-out, which
        counts a grouped conv's full output width too) and a zero Linear bias; BN keeps 1 and 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_avg_pool(self.features(x)).flatten(1))


def remap_condensenet(state: StateDict) -> dict[str, torch.Tensor]:
    """The authors' converted checkpoints (``converted_condensenet_{4,8}.pth.tar``) -> our keys.

    The keys are already ours; the files were saved before BatchNorm had a ``num_batches_tracked``
    buffer (torch 0.4.1), so a 0 stands in for each (it only counts training steps), as torch's own
    loader does, and the strict key check of ``--weights`` sees a complete state_dict.
    """
    remapped = dict(state)
    for key in [k for k in state if k.endswith(".running_var")]:
        remapped.setdefault(key.removesuffix("running_var") + "num_batches_tracked", torch.tensor(0))
    return remapped


@dataclass(frozen=True)
class CondenseNetConfig:
    groups: int  # G: groups of every 1x1 (--group-1x1) and 3x3 (--group-3x3) conv
    condense_factor: int  # C: each group of a 1x1 keeps 1/C of the layer's input channels
    stages: tuple[int, ...] = (4, 6, 8, 10, 8)  # dense layers per block: 36 of two convs, + stem + Linear = 74
    growth: tuple[int, ...] = (8, 16, 32, 64, 128)  # k of each block; exponentially increasing growth


_CONFIGS = {
    "condensenet74_c4_g4": CondenseNetConfig(groups=4, condense_factor=4),
    "condensenet74_c8_g8": CondenseNetConfig(groups=8, condense_factor=8),
}


def _create_condensenet(name: str, **overrides) -> CondenseNet:
    cfg = _CONFIGS[name]
    return CondenseNet(cfg.stages, cfg.growth, cfg.groups, cfg.condense_factor, **overrides)


_PAPER = "Huang et al., CondenseNet: An Efficient DenseNet using Learned Group Convolutions, CVPR 2018"
# The authors' ImageNet eval transform: bilinear resize to 256, center crop 224, ImageNet mean/std.
_SPEC = dict(family="condensenet", paper=_PAPER, size_divisor=1, min_size=31, remap=remap_condensenet)


@register_model(**_SPEC, reference_params=4_773_944)
def condensenet74_c4_g4(**overrides) -> CondenseNet:
    return _create_condensenet("condensenet74_c4_g4", **overrides)


@register_model(**_SPEC, reference_params=2_935_416)
def condensenet74_c8_g8(**overrides) -> CondenseNet:
    return _create_condensenet("condensenet74_c8_g8", **overrides)
