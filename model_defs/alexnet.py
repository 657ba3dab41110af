"""AlexNet, in torchvision's single-tower form.

Paper: "ImageNet Classification with Deep Convolutional Neural Networks" (Krizhevsky et al., NIPS 2012);
this layout is the one of "One weird trick for parallelizing convolutional neural networks"
(Krizhevsky, arXiv 2014), which torchvision's ``alexnet`` follows: five convs of 64-192-384-256-256
channels in one tower, no local response normalization, no grouped convs (the paper has
96-256-384-384-256 split over two GPUs, with LRN). Three 3x3/2 max pools, a 6x6 average pool, then
three fully connected layers (dropout before the first two). Module names are torchvision's
(``features.0``, ``classifier.6``), so its checkpoints load without a remap.

Export notes (../shared/families.md P-ADAPT):
- torchvision ends the features with ``AdaptiveAvgPool2d((6, 6))``. The TorchScript exporter takes an
  adaptive pool only where 6 divides the feature map, so torchvision's AlexNet exports at 224 (a 6x6
  map, as at every size from 223 to 254) but fails at 256 (7x7) or 64 (1x1).
- ``_layers.AdaptiveAvgPool2dStatic`` (shared with VGG) computes the same bins as two MatMuls with
  constant averaging matrices, built from the feature size the export traces (static: only the batch
  is dynamic). Every input from 63 px (a 1x1 map) up exports and gives torchvision's numbers, 227 (the
  paper's) included; a smaller one is refused in one line. On a 6x6 map the pool is the identity, so
  the default export holds no pooling node at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import AdaptiveAvgPool2dStatic
from ._registry import register_model

# The classifier sees the last conv map pooled to 6x6.
_POOLED = 6


class AlexNet(nn.Module):
    def __init__(self, convs: tuple[tuple[int, int, int, int, bool], ...], hidden: int,
                 num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = in_chans
        for out_ch, kernel, stride, padding, pool in convs:
            layers += [nn.Conv2d(in_ch, out_ch, kernel, stride, padding), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(3, 2))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.avgpool = AdaptiveAvgPool2dStatic(_POOLED)
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate), nn.Linear(in_ch * _POOLED * _POOLED, hidden), nn.ReLU(inplace=True),
            nn.Dropout(drop_rate), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.forward_features(x)), 1))


@dataclass(frozen=True)
class AlexNetConfig:
    # out channels, kernel, stride, padding, followed by a 3x3/2 max pool
    convs: tuple[tuple[int, int, int, int, bool], ...]
    hidden: int  # width of the two hidden fully connected layers


_CONFIGS = {
    "alexnet": AlexNetConfig(
        convs=((64, 11, 4, 2, True), (192, 5, 1, 2, True), (384, 3, 1, 1, False), (256, 3, 1, 1, False),
               (256, 3, 1, 1, True)),
        hidden=4096,
    ),
}


def _create_alexnet(name: str, **overrides) -> AlexNet:
    cfg = _CONFIGS[name]
    return AlexNet(cfg.convs, cfg.hidden, **overrides)


_PAPER = ("Krizhevsky et al., ImageNet Classification with Deep Convolutional Neural Networks, NIPS 2012; "
          "single-tower form: Krizhevsky, One weird trick for parallelizing convolutional neural networks, "
          "arXiv 2014")


# Any side from 63 px (a 1x1 feature map) works: the convs need no stride multiple (size_divisor=1).
@register_model(family="alexnet", paper=_PAPER, reference="torchvision:alexnet", reference_params=61_100_840,
                size_divisor=1, min_size=63)
def alexnet(**overrides) -> AlexNet:
    return _create_alexnet("alexnet", **overrides)
