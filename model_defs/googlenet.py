"""GoogLeNet (Inception-v1), in torchvision's form.

Paper: "Going Deeper with Convolutions" (Szegedy et al., CVPR 2015), Table 1.

A 7x7/2 stem, nine Inception modules in three stages (28x28, 14x14, 7x7 at 224), global average
pooling and one linear classifier. An Inception module runs four branches side by side and
concatenates them: 1x1; 1x1 -> 3x3; 1x1 -> "5x5"; 3x3 max pool -> 1x1. This is torchvision's
``googlenet`` (6,624,904 parameters), which differs from the paper where its checkpoint does: every
conv is followed by BatchNorm (eps 1e-3, from the TF-slim port), and the "5x5" branch is a 3x3
(the "known bug" of pytorch/vision#906). Module names are torchvision's (``conv1``,
``inception3a.branch2.1.conv``, ``fc``), so its checkpoints load strictly.

Export notes (../shared/families.md):
- P-TFIN: torchvision's pretrained builder sets ``transform_input=True``, which re-normalises an
  ImageNet-normalised input inside the graph, ``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel.
  That is ``(photo - 0.5) / 0.5``: the photo normalised with mean = std = 0.5. So the spec says
  mean = std = 0.5 and the graph has no transform (no Gather/Mul/Add/Concat at the input, nothing
  for INT8 to calibrate), and a torchvision checkpoint gives torchvision's logits for the same photo.
  A checkpoint trained with ``transform_input=False`` (torchvision's default without weights) expects
  ImageNet mean/std instead, which this spec does not give it.
- P-CEIL: the four stride-2 max pools are ``ceil_mode=True`` (ONNX MaxPool ``ceil_mode=1``). They have
  no padding and a kernel at least their stride, so no window starts past the map and PyTorch and
  ONNX Runtime agree on every output size; any input from 15 px on works (``size_divisor=1``,
  ``min_size=15``: at 14 the map reaching ``maxpool3`` is 1x1, too small for its 3x3 window even in
  ceil mode; at 15 it is 2x2, which ceil mode still pools). The branch pools are stride 1 with
  padding 1, where ceil and floor mode give the same size: they are plain pools here.
- Auxiliary heads: torchvision builds ``aux1``/``aux2`` whenever ``aux_logits=True`` (its
  pretrained checkpoint has them) but runs them in training only. They are never part of an
  inference graph, so this module does not build them and the family's remap drops their keys:
  checkpoints with and without them load strictly. Their ``adaptive_avg_pool2d((4, 4))`` (P-ADAPT)
  goes with them; the head's pool is global (GlobalAveragePool).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._layers import ConvNormAct, FlatClassifier, remap_without
from ._registry import INCEPTION_MEAN, INCEPTION_STD, register_model

_conv = partial(ConvNormAct, eps=1e-3)  # torchvision's BasicConv2d: padding k // 2, TF's epsilon

# One stage: its Inception modules' widths (the arguments of ``Inception`` after ``in_chs``), then the
# kernel of the stride-2 ceil-mode max pool that follows it (0: none).
Stage = tuple[tuple[tuple[int, int, int, int, int, int], ...], int]


class Inception(nn.Module):
    """Four branches on one input, concatenated over channels."""

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = _conv(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(_conv(in_chs, ch3x3red, 1), _conv(ch3x3red, ch3x3, 3))
        # The "5x5" branch: 3x3 in torchvision's checkpoint (pytorch/vision#906).
        self.branch3 = nn.Sequential(_conv(in_chs, ch5x5red, 1), _conv(ch5x5red, ch5x5, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), _conv(in_chs, pool_proj, 1))
        self.out_chs = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(FlatClassifier):
    """The stem, then per stage its Inception modules ``inception<stage><a, b, ...>`` and its pool."""

    def __init__(self, stages: dict[int, Stage], num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.conv1 = _conv(in_chans, 64, 7, stride=2)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = _conv(64, 64, 1)
        self.conv3 = _conv(64, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        chs = 192
        for stage, (modules, pool_kernel) in stages.items():
            for i, widths in enumerate(modules):
                block = Inception(chs, *widths)
                self.add_module(f"inception{stage}{chr(ord('a') + i)}", block)
                chs = block.out_chs
            if pool_kernel:
                self.add_module(f"maxpool{stage}", nn.MaxPool2d(pool_kernel, 2, ceil_mode=True))
        self.num_features = chs
        self.fc = nn.Linear(chs, num_classes)


def _create_googlenet(name: str, **overrides) -> GoogLeNet:
    return GoogLeNet(_STAGES[name], **overrides)


# Table 1 per stage (see ``Stage``): widths 1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5", pool proj.
_STAGES = {
    "googlenet": {
        3: (((64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64)), 3),
        4: (((192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
             (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128)), 2),
        5: (((256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128)), 0),
    },
}

_PAPER = "Szegedy et al., Going Deeper with Convolutions, CVPR 2015"


# torchvision's IMAGENET1K_V1 eval: bilinear resize to 256, centre crop 224; mean = std = 0.5 is its
# in-graph transform_input folded into the preprocessing (P-TFIN above).
@register_model(family="googlenet", paper=_PAPER, mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_pct=0.875,
                reference="torchvision:googlenet", reference_params=6_624_904, size_divisor=1, min_size=15,
                remap=remap_without("aux1.", "aux2."))  # torchvision's aux heads: training only
def googlenet(**overrides) -> GoogLeNet:
    return _create_googlenet("googlenet", **overrides)
