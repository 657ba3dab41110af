"""SqueezeNet 1.0 and 1.1.

Paper: "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size"
(Iandola et al., arXiv 2016). Version 1.1 comes from the authors' repository (forresti/SqueezeNet):
a 3x3 stem of 64 channels and earlier pooling, 2.4x fewer MACs at the same accuracy.

A Fire module squeezes to a few channels with a 1x1 conv, then expands with a 1x1 and a 3x3 conv side
by side and concatenates them; every conv has a bias and a ReLU, there is no BatchNorm. The head is
dropout, a 1x1 conv to the classes, ReLU and a global average pool: no fully connected layer. Module
names are torchvision's (``features.3.squeeze``, ``classifier.1``), so its checkpoints load without a remap.

Export notes (../shared/families.md P-CEIL):
- The three 3x3/2 max pools use ``ceil_mode=True``, as in the Caffe original; they export as ONNX
  MaxPool ``ceil_mode=1`` (opset >= 10), so ONNX Runtime gives PyTorch's feature sizes at every input
  size (13x13 at 224, where floor mode would give 12x12).
- The global pool is ``adaptive_avg_pool2d(x, 1)``, a GlobalAveragePool: any input size works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._layers import global_avg_pool
from ._registry import register_model


class Fire(nn.Module):
    def __init__(self, in_ch: int, squeeze_ch: int, expand_ch: int):
        super().__init__()
        self.squeeze = nn.Conv2d(in_ch, squeeze_ch, 1)
        self.expand1x1 = nn.Conv2d(squeeze_ch, expand_ch, 1)
        self.expand3x3 = nn.Conv2d(squeeze_ch, expand_ch, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.squeeze(x))
        return torch.cat([self.relu(self.expand1x1(x)), self.relu(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self, stem: tuple[int, int], layers: tuple, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.5):
        super().__init__()
        stem_ch, stem_kernel = stem
        modules: list[nn.Module] = [nn.Conv2d(in_chans, stem_ch, stem_kernel, 2), nn.ReLU(inplace=True)]
        in_ch = stem_ch
        for layer in layers:
            if layer == "M":
                modules.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                squeeze_ch, expand_ch = layer
                modules.append(Fire(in_ch, squeeze_ch, expand_ch))
                in_ch = 2 * expand_ch
        self.features = nn.Sequential(*modules)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Conv2d(in_ch, num_classes, 1),
                                        nn.ReLU(inplace=True))
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's: Kaiming-uniform convs, zero biases, and a small normal final conv, so the
        logits of a random network start near zero."""
        final_conv = self.classifier[1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(self.classifier(self.forward_features(x))).flatten(1)


@dataclass(frozen=True)
class SqueezeNetConfig:
    stem: tuple[int, int]  # out channels, kernel of the stride-2 stem conv (no padding)
    # "M" = MaxPool(3, 2, ceil_mode=True); (s, e) = Fire squeezing to s, expanding to e (1x1) + e (3x3)
    layers: tuple


_CONFIGS = {
    "squeezenet1_0": SqueezeNetConfig(
        stem=(96, 7),
        layers=("M", (16, 64), (16, 64), (32, 128), "M", (32, 128), (48, 192), (48, 192), (64, 256), "M",
                (64, 256)),
    ),
    "squeezenet1_1": SqueezeNetConfig(
        stem=(64, 3),
        layers=("M", (16, 64), (16, 64), "M", (32, 128), (32, 128), "M", (48, 192), (48, 192), (64, 256),
                (64, 256)),
    ),
}


def _create_squeezenet(name: str, **overrides) -> SqueezeNet:
    cfg = _CONFIGS[name]
    return SqueezeNet(cfg.stem, cfg.layers, **overrides)


_PAPER = ("Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model "
          "size, arXiv 2016")


# Any side works down to the smallest that leaves a 1x1 map after the third pool (size_divisor=1).
@register_model(family="squeezenet", paper=_PAPER, reference="torchvision:squeezenet1_0",
                reference_params=1_248_424, size_divisor=1, min_size=21)
def squeezenet1_0(**overrides) -> SqueezeNet:
    return _create_squeezenet("squeezenet1_0", **overrides)


@register_model(family="squeezenet", paper=_PAPER, reference="torchvision:squeezenet1_1",
                reference_params=1_235_496, size_divisor=1, min_size=17)
def squeezenet1_1(**overrides) -> SqueezeNet:
    return _create_squeezenet("squeezenet1_1", **overrides)
