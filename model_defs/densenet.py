"""DenseNet-BC.

Paper: "Densely Connected Convolutional Networks" (Huang et al., CVPR 2017).

Every layer of a dense block sees the concatenation of the block's input and of all earlier layers'
outputs, and adds ``growth_rate`` (k) channels of its own: BN-ReLU-Conv1x1 to ``bn_size * k``, then
BN-ReLU-Conv3x3 to k ("B", bottleneck). Between blocks a transition (BN-ReLU-Conv1x1 halving the
channels, "C" compression 0.5, then AvgPool 2x2) halves the resolution. The stem is conv 7x7/2 to
2k channels, BN-ReLU and max pool 3x3/2; the head is BN-ReLU, a global average pool and a Linear.

The module names are torchvision's and timm's (their keys are the same: ``features.conv0``,
``features.denseblock1.denselayer1.norm1``, ``features.transition1.conv``, ``features.norm5``,
``classifier``), so both libraries' state_dicts load without a remap. Torchvision's ImageNet files
(timm's ``densenet*.tv_in1k`` too) still carry the old ``denselayer<i>.norm.1`` / ``conv.2`` names (a
module name may no longer hold a dot), which both libraries' loaders rename; the family remap,
:func:`remap_legacy_densenet`, does the same for ``--weights``.

Export notes (../shared/families.md, DenseNet rows):
- Dense concatenation: each layer returns ``cat([input, new_features])``, so a block of L layers is
  L Concat nodes of two inputs each, and the last one is the block's output. Torchvision and timm
  keep a list and concatenate all of it again in every layer and once more at the block's end: the
  same values, with one extra Concat per block and many-input Concats. Each Concat still writes the
  whole growing map once (DenseNet's quadratic memory traffic, which a graph of values cannot avoid).
- The BN-ReLU that opens each dense layer reads a Concat, not a conv, so it cannot fold into a conv at
  export: it stays a BatchNormalization node (58 of them in DenseNet-121, plus the transitions' and norm5).
- ``memory_efficient`` (torchvision) / ``grad_checkpointing`` (timm) recompute the bottleneck under
  ``torch.utils.checkpoint`` while training. This definition has no checkpointing at all (it is an
  inference definition), so nothing of it can reach an exported graph, and the builders reject the
  option instead of ignoring it.
- The global pool is ``adaptive_avg_pool2d(x, 1)``, a GlobalAveragePool; the transitions' pools are
  plain 2x2 average pools in floor mode, so any input size from 29 px up exports (P-ADAPT does not apply).
- Dropout (torchvision's ``drop_rate``, timm's ``proj_drop_rate``) is 0 in every reference variant and
  the identity at eval: it is left out.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, global_avg_pool
from ._registry import StateDict, register_model


class DenseLayer(nn.Module):
    """BN-ReLU-Conv1x1 (``bn_size * growth_rate``) -> BN-ReLU-Conv3x3 (``growth_rate``), with its
    output appended to its input along the channels."""

    def __init__(self, in_chs: int, growth_rate: int, bn_size: int):
        super().__init__()
        mid_chs = bn_size * growth_rate
        self.norm1 = BatchNormAct2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
        self.norm2 = BatchNormAct2d(mid_chs)
        self.conv2 = nn.Conv2d(mid_chs, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new_features = self.conv2(self.norm2(self.conv1(self.norm1(x))))
        return torch.cat([x, new_features], 1)


class DenseTransition(nn.Sequential):
    """BN-ReLU-Conv1x1 to ``out_chs`` -> AvgPool 2x2/2."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(OrderedDict([
            ("norm", BatchNormAct2d(in_chs)),
            ("conv", nn.Conv2d(in_chs, out_chs, 1, bias=False)),
            ("pool", nn.AvgPool2d(2, 2)),
        ]))


def _dense_block(num_layers: int, in_chs: int, growth_rate: int, bn_size: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        (f"denselayer{i + 1}", DenseLayer(in_chs + i * growth_rate, growth_rate, bn_size)) for i in range(num_layers)
    ))


class DenseNet(nn.Module):
    def __init__(self, growth_rate: int, block_config: tuple[int, ...], num_init_features: int, bn_size: int = 4,
                 num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        stem = [
            ("conv0", nn.Conv2d(in_chans, num_init_features, 7, 2, 3, bias=False)),
            ("norm0", BatchNormAct2d(num_init_features)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]
        self.features = nn.Sequential(OrderedDict(stem))
        chs = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _dense_block(num_layers, chs, growth_rate, bn_size))
            chs += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", DenseTransition(chs, chs // 2))
                chs //= 2
        # The final BN-ReLU (torchvision applies the ReLU in forward; timm folds it into norm5 as here).
        self.features.add_module("norm5", BatchNormAct2d(chs))
        self.num_features = chs
        self.classifier = nn.Linear(chs, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Torchvision's: Kaiming-normal (fan-in) convs and a zero Linear bias; BatchNorm's own defaults
        (weight 1, bias 0) are torchvision's too."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(global_avg_pool(self.forward_features(x)).flatten(1))


# The names torchvision's ImageNet files still use inside a dense layer: ``norm.1``, ``conv.1``,
# ``norm.2``, ``conv.2`` for today's ``norm1`` ... (the pattern torchvision's and timm's loaders rewrite).
_LEGACY_LAYER_KEY = re.compile(r"(\.denselayer\d+\.(?:norm|conv))\.([12])\.")


def remap_legacy_densenet(state: StateDict) -> dict[str, torch.Tensor]:
    """Checkpoints with the legacy dense-layer names (``...denselayer1.norm.1.weight``) -> our keys;
    every other key is kept as it is.

    Those files were saved before BatchNorm had a ``num_batches_tracked`` buffer (torch 0.4.1); torch's
    own loader puts a 0 in its place for such a checkpoint, and so does this (it only counts training
    steps, eval never reads it), so the strict key check of ``--weights`` sees a complete state_dict.
    """
    remapped = {_LEGACY_LAYER_KEY.sub(r"\1\2.", key): value for key, value in state.items()}
    for key in [k for k in remapped if k.endswith(".running_var")]:
        remapped.setdefault(key.removesuffix("running_var") + "num_batches_tracked", torch.tensor(0))
    return remapped


@dataclass(frozen=True)
class DenseNetConfig:
    growth_rate: int  # k: channels each dense layer adds
    block_config: tuple[int, int, int, int]  # dense layers per block
    num_init_features: int  # stem width, 2k in every variant


_CONFIGS = {
    "densenet121": DenseNetConfig(32, (6, 12, 24, 16), 64),
    "densenet161": DenseNetConfig(48, (6, 12, 36, 24), 96),
    "densenet169": DenseNetConfig(32, (6, 12, 32, 32), 64),
    "densenet201": DenseNetConfig(32, (6, 12, 48, 32), 64),
}


def _create_densenet(name: str, **overrides) -> DenseNet:
    cfg = _CONFIGS[name]
    return DenseNet(cfg.growth_rate, cfg.block_config, cfg.num_init_features, **overrides)


_PAPER = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017"
# Floor-mode pools take any side; 29 px is the smallest that leaves a 1x1 map after the last transition
# (torchvision's min_size). Preprocessing is torchvision's: bilinear resize to 256, center crop 224.
_SPEC = dict(family="densenet", paper=_PAPER, size_divisor=1, min_size=29, remap=remap_legacy_densenet)


@register_model(**_SPEC, reference="torchvision:densenet121", reference_params=7_978_856)
def densenet121(**overrides) -> DenseNet:
    return _create_densenet("densenet121", **overrides)


@register_model(**_SPEC, reference="torchvision:densenet161", reference_params=28_681_000)
def densenet161(**overrides) -> DenseNet:
    return _create_densenet("densenet161", **overrides)


@register_model(**_SPEC, reference="torchvision:densenet169", reference_params=14_149_480)
def densenet169(**overrides) -> DenseNet:
    return _create_densenet("densenet169", **overrides)


@register_model(**_SPEC, reference="torchvision:densenet201", reference_params=20_013_928)
def densenet201(**overrides) -> DenseNet:
    return _create_densenet("densenet201", **overrides)
