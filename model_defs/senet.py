"""SENet: SE-ResNet, SE-ResNeXt and SENet-154, in timm's ResNet form and in the original Caffe form.

Paper: "Squeeze-and-Excitation Networks" (Hu et al., CVPR 2018).

A squeeze-and-excitation gate rescales the channels of every bottleneck's residual branch before the
add: global mean -> 1x1 conv to C/16 -> ReLU -> 1x1 conv back to C -> sigmoid -> multiply. The trunk is
``resnet.ResNet`` with its ``Bottleneck`` and the SE gate as the block's attention, so the module names
are timm's ResNet ones (``conv1``, ``layer1.0.se.fc1``, ``fc``) and timm's ``seresnet50`` /
``seresnext50_32x4d`` load without a remap.

The Caffe models (hujie-frank/SENet), ported by Cadene (pretrainedmodels ``se_resnet50``,
``se_resnext50_32x4d``, ``senet154``) and kept by timm as ``legacy_*`` (the same keys and shapes, checked
in tests/test_family_senet.py), differ from timm's form in three ways:
- the stem pool is ``MaxPool(3, 2, ceil_mode=True)`` without padding, where timm pads by 1 in floor mode;
- Caffe SE-ResNet puts a downsampling block's stride on its first 1x1 (ResNet v1); Caffe SE-ResNeXt and
  SENet-154 stride the 3x3, as timm does (both ports agree, and parity with each tells them apart);
- SENet-154 has three 3x3 convs as its stem (64, 64, 128), 64 groups of 4 channels at the first stage,
  a first 1x1 at half the 3x3's width, and 3x3 strided shortcut projections.
Their keys (``layer0.conv1``, ``layer1.0.se_module.fc1``, ``last_linear``) load through
:func:`remap_caffe_senet`.

Export notes (../shared/families.md, SENet rows):
- P-CAFFE: the stride placement and the ceil-mode pool are per variant (``SENetConfig``). Same parameters,
  different MACs: legacy_seresnet50 3.861 vs seresnet50 4.092 GMACs (conv + linear), because the 3x3s
  of the downsampling blocks run at the lower resolution. The ported weights take RGB in [0, 1] with the
  ImageNet mean and std (Cadene's settings for these three, unlike his BN-Inception's BGR 0-255).
- P-CEIL: the ceil-mode pool exports as ONNX MaxPool ``ceil_mode=1`` (opset >= 10). On the stem's even
  maps (every multiple of 32) it gives the size timm's padded floor-mode pool does, with every window one
  pixel further on: the wrong mode passes a shape check and fails parity, so the Caffe variants are
  compared with ceil-mode references. Without padding no ceil-mode window starts outside the map.
- SE: GlobalAveragePool -> Conv -> Relu -> Conv -> Sigmoid -> Mul, no reshape; the batch stays dynamic.
- P-ADAPT does not apply: the head is a global average pool, so every multiple of 32 exports. Cadene's
  head is a fixed ``AvgPool2d(7)`` (224 only); at 224 it is the same global mean.
- Dropout before the classifier (0.2 in Cadene's SENet-154 and in all of timm's legacy models) is the
  identity at eval: left out.
- Initialisation matters to the seeded random weights that drift is measured on. ResNet (and timm's
  ResNet form) zero-inits each residual branch's last BN, which mutes every SE gate; the Caffe models'
  unit BNs make SENet-154's 50 blocks chaotic on noise inputs (float32 and float64 logits 5% apart, where
  the FP32 export budget is 0.1%). Here that BN starts at 1/sqrt(blocks), GPT-2's depth-scaled residual
  init: the gates stay live and the network well-conditioned (2e-6 at 0.5 already).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import global_avg_pool
from ._registry import StateDict, register_model
from .resnet import Bottleneck, ResNet


class SEModule(nn.Module):
    """The SE gate, with the ``fc1``/``fc2`` names of timm's and Cadene's modules. Its width is
    ``channels // 16`` in both (timm rounds C/16 to a multiple of 8, which it already is here)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(global_avg_pool(x)))))


@dataclass(frozen=True)
class SENetConfig:
    """Every variant is ``resnet.Bottleneck`` with an SE gate; the fields say how the bottleneck and the
    trunk around it are shaped."""

    layers: tuple[int, int, int, int]  # bottlenecks per stage
    groups: int = 1  # cardinality of the 3x3
    base_width: int = 64  # 3x3 channels per group at the first stage (ResNeXt's "4d": 4)
    reduce_first: int = 1  # the first 1x1 has (3x3 width) // reduce_first channels
    stem_width: int = 0  # 0: one 7x7 conv to 64; else three 3x3 convs (w, w, 2w)
    down_kernel: int = 1  # kernel of the strided shortcut projections
    stride_in_1x1: bool = False  # True: stride on the first 1x1 (Caffe SE-ResNet), not the 3x3
    caffe_pool: bool = False  # True: stem MaxPool(3, 2, ceil_mode=True) without padding


_CONFIGS = {
    "seresnet50": SENetConfig((3, 4, 6, 3)),
    "seresnext50_32x4d": SENetConfig((3, 4, 6, 3), groups=32, base_width=4),
    "legacy_seresnet50": SENetConfig((3, 4, 6, 3), stride_in_1x1=True, caffe_pool=True),
    "legacy_seresnext50_32x4d": SENetConfig((3, 4, 6, 3), groups=32, base_width=4, caffe_pool=True),
    "senet154": SENetConfig((3, 8, 36, 3), groups=64, base_width=4, reduce_first=2, stem_width=64,
                            down_kernel=3, caffe_pool=True),
}


def _create_senet(name: str, **overrides) -> ResNet:
    cfg = _CONFIGS[name]
    block_args = dict(reduce_first=cfg.reduce_first, stride_in_1x1=cfg.stride_in_1x1, attn_layer=SEModule)
    model = ResNet(Bottleneck, cfg.layers, groups=cfg.groups, base_width=cfg.base_width, stem_width=cfg.stem_width,
                   down_kernel=cfg.down_kernel, caffe_pool=cfg.caffe_pool, block_args=block_args, **overrides)
    # Not ResNet's zero init of the branches' last BN, which would mute the SE gates (module docstring).
    for block in model.modules():
        if isinstance(block, Bottleneck):
            nn.init.constant_(block.bn3.weight, sum(cfg.layers) ** -0.5)
    return model


# Caffe layout -> ours. The stem is ``layer0``: one conv + BN, or SENet-154's three, which become the
# indices of ``resnet.deep_stem`` (its last BN is the trunk's ``bn1``).
_CAFFE_STEM = {"conv1": "conv1", "bn1": "bn1"}
_CAFFE_DEEP_STEM = {"conv1": "conv1.0", "bn1": "conv1.1", "conv2": "conv1.3", "bn2": "conv1.4", "conv3": "conv1.6",
                    "bn3": "bn1"}
_CAFFE_STEM_KEY = re.compile(r"^layer0\.(\w+)\.")


def remap_caffe_senet(state: StateDict) -> dict[str, torch.Tensor]:
    """Cadene's / timm ``legacy_*`` keys (``layer0.conv1``, ``layer1.0.se_module.fc1``, ``last_linear``)
    -> ours (``conv1``, ``layer1.0.se.fc1``, ``fc``). A stem module the table lacks is a KeyError."""
    stem = _CAFFE_DEEP_STEM if "layer0.conv2.weight" in state else _CAFFE_STEM
    remapped = {}
    for key, value in state.items():
        key = _CAFFE_STEM_KEY.sub(lambda m: stem[m.group(1)] + ".", key)
        key = re.sub(r"^last_linear\.", "fc.", key.replace(".se_module.", ".se."))
        remapped[key] = value
    return remapped


_PAPER = "Hu et al., Squeeze-and-Excitation Networks, CVPR 2018"
# timm's own weights (seresnet50.ra2_in1k, seresnext50_32x4d.racm_in1k) are evaluated with a bicubic
# resize; the Caffe ports with the defaults (bilinear, crop 0.875).
_TIMM = dict(family="senet", paper=_PAPER, interpolation="bicubic")
_CAFFE = dict(family="senet", paper=_PAPER, remap=remap_caffe_senet)


@register_model(**_TIMM, reference="timm:seresnet50", reference_params=28_088_024)
def seresnet50(**overrides) -> ResNet:
    return _create_senet("seresnet50", **overrides)


@register_model(**_TIMM, reference="timm:seresnext50_32x4d", reference_params=27_559_896)
def seresnext50_32x4d(**overrides) -> ResNet:
    return _create_senet("seresnext50_32x4d", **overrides)


@register_model(**_CAFFE, reference="timm:legacy_seresnet50", reference_params=28_088_024)
def legacy_seresnet50(**overrides) -> ResNet:
    return _create_senet("legacy_seresnet50", **overrides)


@register_model(**_CAFFE, reference="timm:legacy_seresnext50_32x4d", reference_params=27_559_896)
def legacy_seresnext50_32x4d(**overrides) -> ResNet:
    return _create_senet("legacy_seresnext50_32x4d", **overrides)


# timm's own ``senet154`` (resnet.py, Gluon weights) has the same parameters with a padded floor-mode stem
# pool: it is not this network. This one is timm's ``legacy_senet154``, hence the alias.
@register_model(**_CAFFE, reference="timm:legacy_senet154", reference_params=115_088_984,
                aliases=("legacy_senet154",))
def senet154(**overrides) -> ResNet:
    return _create_senet("senet154", **overrides)
