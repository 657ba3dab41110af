"""ESPNet-C.

Paper: "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic Segmentation" (Mehta,
Rastegari, Caspi, Shapiro and Hajishirzi, ECCV 2018).

ESPNet is a segmentation network; ESPNet-C is its encoder, and no ImageNet classifier exists
(../shared/families.md, ESPNet row). The encoder, as the authors' ``ESPNet_Encoder(classes, p, q)`` in
sacmehta/ESPNet ``train/Model.py`` builds it:
- level 1: a 3x3/2 conv-BN-PReLU to 16 channels (1/2);
- input reinforcement: the image, average-pooled (3x3/2, padding 1) to each level's resolution, is
  concatenated to the level's features: 16 + 3 channels at 1/2, BN-PReLU;
- level 2: a strided ESP module to 64 channels (1/4), then p ESP blocks; their output, the strided
  module's and the image at 1/4 are concatenated (128 + 3), BN-PReLU;
- level 3: a strided ESP module to 128 channels (1/8), then q ESP blocks; the strided module's output
  and theirs are concatenated (256), BN-PReLU;
- a bias-free 1x1 conv to the class scores: a map of them at 1/8 of the input.
The ESP module reduces with a conv to n = C/5 channels (1x1 in a block, 3x3/2 in the strided module),
runs five 3x3 convs at dilations 1, 2, 4, 8 and 16 on it side by side (the dilation-1 one takes the
remaining C - 4n channels), fuses them hierarchically (the dilated outputs summed cumulatively: d2,
d2+d4, d2+d4+d8, d2+d4+d8+d16, against gridding) and concatenates the five. A block adds its input
and applies BN-PReLU; the strided module BN-PReLU alone. BatchNorm eps is 1e-3 throughout.

``espnet_c`` is that encoder at p = 5, q = 3 (the authors' defaults) with 1000 classes. What we added
for classification is one global average pool: the image's logits are the mean of the encoder's class-
score map. The pool runs before the 1x1 classifier, where it gives the same logits (a bias-free 1x1
conv and a mean over positions commute) at 1/784 of the classifier's cost at 224. Nothing else is
changed, so the state_dict is the authors' ``ESPNet_Encoder(1000, 5, 3)`` key for key (``level1.act``,
``level2_0.d16.conv``, ``level3.2.bn.bn``, ``b3.act``, ``classifier.conv``) and loads without a remap:
462,025 parameters, counted here from that code (families.md has no count for a network it lists as
having no ImageNet model). No authors' checkpoint fits this variant (theirs are Cityscapes encoders at
p = 2 and 20 classes), so preprocessing is ImageNet's (bilinear, 0.875 crop, ImageNet mean/std).

Export notes (../shared/families.md, ESPNet row):
- Input reinforcement is a chain of strided average pools over the image (ONNX AveragePool, kernel 3,
  stride 2, padding 1, count_include_pad as PyTorch's default), never a resize to a traced size, so
  nothing in the graph depends on the resolution it was traced at. Every downsampling layer (the 3x3/2
  convs with padding 1 and the pools) gives ceil(n / 2) rows, so the image and the features agree at
  every side, odd ones included (``size_divisor=1``). The spec starts at 8 px (``min_size``), one
  cell of the 1/8 map: smaller sides run too, on a network built to see at least that.
- The dilated convs are plain Conv nodes with dilations 2-16; at 1/8 resolution (28x28 at 224) most of
  the d=16 taps read padding, which costs MACs but is exact.
- PReLU has one slope per channel (ONNX PRelu). The head pools globally (GlobalAveragePool), so
  P-ADAPT does not arise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import ConvNormPReLU, NormPReLU, global_avg_pool, named_conv
from ._registry import register_model

_EPS = 1e-3  # the authors' BatchNorm eps in every layer
_DILATIONS = (1, 2, 4, 8, 16)  # the ESP module's parallel branches, d1 ... d16


class EspBranches(nn.Module):
    """Reduce -> split -> transform -> merge: a conv to n = out/5 channels, the five dilated 3x3 convs
    on it, hierarchical sums of d2 ... d16, and the concat of d1 with the four sums."""

    def __init__(self, in_chs: int, out_chs: int, reduce_kernel: int, stride: int):
        super().__init__()
        n = out_chs // 5
        self.c1 = named_conv(in_chs, n, reduce_kernel, stride)
        for d in _DILATIONS:  # d1 takes the channels the fifths leave over
            self.add_module(f"d{d}", named_conv(n, out_chs - 4 * n if d == 1 else n, 3, dilation=d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        merged, fused = [self.d1(x)], None
        for d in _DILATIONS[1:]:
            branch = getattr(self, f"d{d}")(x)
            fused = branch if fused is None else fused + branch
            merged.append(fused)
        return torch.cat(merged, 1)


class DownSamplerB(EspBranches):
    """The strided ESP module: a 3x3/2 reducing conv, no residual, BN-PReLU (the authors' ``bn``/``act``
    sit on the module itself here, where a block keeps them in a ``BR`` named ``bn``)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(in_chs, out_chs, reduce_kernel=3, stride=2)
        self.bn = nn.BatchNorm2d(out_chs, eps=_EPS)
        self.act = nn.PReLU(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(super().forward(x)))


class EspBlock(EspBranches):
    """The ESP block: a 1x1 reducing conv, the input added back, BN-PReLU."""

    def __init__(self, chs: int):
        super().__init__(chs, chs, reduce_kernel=1, stride=1)
        self.bn = NormPReLU(chs, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x + super().forward(x))


class ESPNetC(nn.Module):
    """The ESPNet-C encoder (module names the authors') and a global average pool of its class scores."""

    def __init__(self, p: int, q: int, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.level1 = ConvNormPReLU(in_chans, 16, 3, stride=2, eps=_EPS)
        # Parameter-free: the authors' two InputProjectionA modules (1 and 2 pools) are this one pool run
        # once and then once more.
        self.image_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.b1 = NormPReLU(16 + in_chans, eps=_EPS)
        self.level2_0 = DownSamplerB(16 + in_chans, 64)
        self.level2 = nn.Sequential(*(EspBlock(64) for _ in range(p)))
        self.b2 = NormPReLU(128 + in_chans, eps=_EPS)
        self.level3_0 = DownSamplerB(128 + in_chans, 128)
        self.level3 = nn.Sequential(*(EspBlock(128) for _ in range(q)))
        self.b3 = NormPReLU(256, eps=_EPS)
        self.num_features = 256
        self.classifier = named_conv(256, num_classes, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        image = self.image_pool(x)  # the image at 1/2
        x = self.b1(torch.cat([self.level1(x), image], 1))
        down = self.level2_0(x)
        image = self.image_pool(image)  # at 1/4
        x = self.b2(torch.cat([self.level2(down), down, image], 1))
        down = self.level3_0(x)
        return self.b3(torch.cat([down, self.level3(down)], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pooled before the 1x1 classifier: the same logits as pooling the authors' class-score map.
        return self.classifier(global_avg_pool(self.forward_features(x))).flatten(1)


@dataclass(frozen=True)
class ESPNetCConfig:
    p: int  # ESP blocks at level 2 (64 channels, 1/4)
    q: int  # ESP blocks at level 3 (128 channels, 1/8)


_CONFIGS = {
    "espnet_c": ESPNetCConfig(p=5, q=3),
}


def _create_espnet(name: str, **overrides) -> ESPNetC:
    cfg = _CONFIGS[name]
    return ESPNetC(cfg.p, cfg.q, **overrides)


_PAPER = ("Mehta, Rastegari, Caspi, Shapiro and Hajishirzi, ESPNet: Efficient Spatial Pyramid of Dilated "
          "Convolutions for Semantic Segmentation, ECCV 2018")


# reference_params: the authors' ESPNet_Encoder(classes=1000, p=5, q=3), counted from their code.
@register_model(family="espnet", paper=_PAPER, reference_params=462_025, size_divisor=1, min_size=8)
def espnet_c(**overrides) -> ESPNetC:
    return _create_espnet("espnet_c", **overrides)
