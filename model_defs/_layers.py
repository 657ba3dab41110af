"""Small layers and helpers shared by several families (append-only: other families import these)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """The channel-rounding rule of MobileNet, EfficientNet and GhostNet width multipliers: the nearest
    multiple of ``divisor``, at least ``min_value`` (default ``divisor``), and never more than
    ``1 - round_limit`` below ``value``. Checkpoints depend on it bit for bit, so it must not change."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., CVPR 2018) as the mobile families use it: a global mean, a 1x1
    conv down to ``rd_channels``, an activation, a 1x1 conv back up and a gate that scales each channel.
    The names are timm's (``conv_reduce``, ``conv_expand``) so its checkpoints load."""

    def __init__(self, channels: int, rd_channels: int, act_layer: type[nn.Module] = nn.ReLU,
                 gate_layer: type[nn.Module] = nn.Sigmoid):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1)
        self.act1 = act_layer(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1)
        self.gate = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.conv_expand(self.act1(self.conv_reduce(global_avg_pool(x))))
        return x * self.gate(scale)


class Mlp(nn.Module):
    """The transformer feed-forward block: Linear -> activation -> Linear, with timm's ``fc1``/``fc2``
    names. The default GELU is the exact (erf) form the ViT and Swin checkpoints were trained with."""

    def __init__(self, in_features: int, hidden_features: int, act_layer: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: view the channels as (groups, C/groups), transpose, flatten.

    Channel ``j * groups + i`` of the result is input channel ``i * (C/groups) + j``. The megvii
    ShuffleNetV1 convention, a (C/g, g) view, is the inverse permutation: ``channel_shuffle(x, C // g)``.
    Only the channel axis is named, so neither the batch nor the resolution is baked into an export.
    """
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d followed by an activation, with plain BatchNorm2d parameter names (timm's
    ``BatchNormAct2d``: the activation has no parameters, so checkpoints see an ordinary BN)."""

    def __init__(self, num_features: int, act_layer: type[nn.Module] | None = nn.ReLU, eps: float = 1e-5):
        super().__init__(num_features, eps=eps)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class ConvNormAct(nn.Module):
    """Conv (no bias, symmetric padding ``kernel_size // 2`` per axis unless ``padding`` says otherwise:
    0 for TF "VALID") -> BatchNorm -> activation, with the ``conv``/``bn`` names of timm's
    ``ConvNormAct`` (byobnet, maxxvit, inception_v4, inception_resnet_v2)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 1, stride: int = 1,
                 groups: int = 1, act_layer: type[nn.Module] | None = nn.ReLU,
                 padding: int | tuple[int, int] | None = None, eps: float = 1e-5):
        super().__init__()
        if padding is None:
            padding = tuple(k // 2 for k in to_2tuple(kernel_size))
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = BatchNormAct2d(out_chs, act_layer, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map. Permuting to channels-last keeps it one ONNX
    ``LayerNormalization`` at opset 17 (which TensorRT runs in FP32) instead of a hand-written mean/var."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, 1, 1). Exports as GlobalAveragePool, which ONNX Runtime runs in its
    blocked NCHWc layout; ``x.mean((2, 3))`` exports as ReduceMean, which forces a layout reorder
    around it (16 of them in EfficientNet-B0's SE blocks, 15% of its CPU latency)."""
    return F.adaptive_avg_pool2d(x, 1)


class ClassifierHead(nn.Module):
    """Global average pool -> Linear, with the ``head.fc`` name of timm's ``ClassifierHead``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.fc(global_avg_pool(x).flatten(1))


def to_2tuple(size: int | tuple[int, int]) -> tuple[int, int]:
    """An image size given as one side or as (height, width), as (height, width)."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class AdaptiveAvgPool2dStatic(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` that exports at every input size (P-ADAPT: the TorchScript
    exporter takes an adaptive pool only where the output size divides the input size). VGG's 7x7 and
    AlexNet's 6x6 pools before their classifiers need it.

    Adaptive pooling is separable: output cell (i, j) averages the input rows of bin i and the columns
    of bin j, where bin i of ``out`` over a side ``n`` spans ``floor(i*n/out)`` up to
    ``ceil((i+1)*n/out)`` (PyTorch's rule; bins overlap or repeat inputs where ``out`` does not divide
    ``n``). So it is ``rows @ x @ cols.T``, with (out, n) averaging matrices built as constants from the
    traced size: H and W are static in every export, only the batch is dynamic. Where the input already
    has the output size (the training resolution) it is the identity and adds no node.
    """

    def __init__(self, output_size: int | tuple[int, int]):
        super().__init__()
        self.output_size = to_2tuple(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(int(side) for side in x.shape[-2:])  # Python ints: constants under tracing
        if size == self.output_size:
            return x
        rows, cols = (_bin_means(side, bins, x) for side, bins in zip(size, self.output_size, strict=True))
        return rows @ x @ cols.T

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def _bin_means(side: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, side) matrix whose row i averages the inputs of adaptive-pool bin i."""
    matrix = []
    for i in range(bins):
        start, end = i * side // bins, -(-(i + 1) * side // bins)
        matrix.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(side)])
    return torch.tensor(matrix, dtype=like.dtype, device=like.device)


class FlatClassifier(nn.Module):
    """Base of the networks whose layers are top-level attributes under their reference's names
    (torchvision's GoogLeNet ``conv1`` ... ``inception5b``, Inception-v3 ``Conv2d_1a_3x3`` ... ``Mixed_7c``),
    so its keys need no prefix. A subclass adds the layers in forward order and then ``fc``; the
    features are global-average pooled into ``fc``."""

    fc: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name, layer in self.named_children():
            if name != "fc":
                x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(global_avg_pool(self.forward_features(x)).flatten(1))


def remap_without(*prefixes: str) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A checkpoint remap that drops the keys under ``prefixes``: the training-only modules of a
    reference (GoogLeNet's and Inception-v3's auxiliary classifiers), which no inference graph runs."""

    def remap(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value for key, value in state.items() if not key.startswith(prefixes)}

    return remap


class NormPReLU(nn.Module):
    """BatchNorm -> PReLU with one slope per channel, named ``bn``/``act`` as the ESPNet authors' ``BR``
    (ESPNet, ESPNetv2), so their checkpoints load without a remap. ONNX ``PRelu``; the BN folds into the
    conv before it where there is one."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps)
        self.act = nn.PReLU(num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class ConvNormPReLU(NormPReLU):
    """Bias-free conv (padding ``kernel_size // 2``) -> BatchNorm -> per-channel PReLU: the ESPNet authors'
    ``CBR``, with its ``conv``/``bn``/``act`` names."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 eps: float = 1e-5):
        super().__init__(out_chs, eps)
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.conv(x))


def named_conv(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, dilation: int = 1,
               groups: int = 1) -> nn.Sequential:
    """A bias-free conv padded ``dilation * (kernel_size // 2)`` (the map kept at stride 1, halved rounding
    up at stride 2) under the one name ``conv``: the layout of the ESPNet authors' ``C``/``CDilated``
    wrappers (``level3.0.d8.conv.weight``), so their checkpoints load as they are."""
    conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, dilation * (kernel_size // 2), dilation, groups,
                     bias=False)
    return nn.Sequential(OrderedDict(conv=conv))
