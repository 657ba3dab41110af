"""ChannelNet-v1.

Paper: "ChannelNets: Compact and Efficient Convolutional Neural Networks via Channel-Wise Convolutions"
(Gao, Wang and Ji, NeurIPS 2018).

A MobileNet-v1 body (3x3/2 conv to 32, then depthwise-separable blocks "dw_block": a bias-free 3x3
depthwise conv with no norm, then a 1x1 conv + BN + ReLU6) whose 14x14 stage trades dense 1x1 convs for
sparse ones:

- GM (group module, the authors' ``simple_group_block``): the 512 channels split in 2 groups, each
  through 2 dw_blocks of 256, concatenated; added to its input.
- GCWM (group channel-wise module, ``conv_group_block``), twice: a group channel-wise convolution, a
  single-channel 3-D conv sliding along the channel axis (kernel (4 * groups, 1, 1) = (8, 1, 1), stride
  2 along the channels, 2 output maps, TF "SAME": 16 weights), whose 2 output maps of 256 channels feed
  2 groups of 2 dw_blocks, concatenated; the second GCWM is added to its input. The channel-wise conv
  lets every group see every input channel, which plain groups would not.
- then dw_blocks to 1024 (stride 2) and 1024, and the head: a global mean and a Linear (``out_block``),
  or the CCL (convolutional classification layer, ``conv_out_block``): a 3x3 depthwise conv, then a
  3-D conv with kernel (25, 7, 7), VALID, over the (1024, 7, 7) volume: 1024 - 25 + 1 = 1000 logits
  from 9,216 + 1,225 weights in place of the Linear's 1,025,000.

Neither timm nor torchvision defines it. The facts come from the authors' TensorFlow 1 code,
HongyangGao/ChannelNets ``model.py`` and ``utils/ops.py`` (defaults of ``main.py``: ``ch_num`` 32,
``block_num`` 2, ``group_num`` 2, NCHW). Its count is not the README's 3.7M, for one reason:
``model.py`` concatenates each stride-1 dw_block of the first stages with its input (``tf.concat`` on
the channel axis: ``add0`` 32 + 64 = 96, ``add1`` 128 + 128 = 256, ``add2`` 256 + 256 = 512), so the
next dw_blocks read 96, 256 and 512 channels where MobileNet's read 64, 128 and 256. Counted here:

- without the concatenations (MobileNet's widths): **3,703,432** parameters, README 3.7M (+0.09%);
  ``channelnet_v1``;
- the same with the CCL: 2,688,873 (3,703,432 - 1,025,000 + 10,441); ``channelnet_v1_ccl``;
- with the concatenations (``model.py`` as released): 3,875,112, 4.7% above the README's 3.7M: the
  three wider dw_blocks add 4,384 + 33,920 + 133,376 = 171,680 parameters; ``channelnet_v1_concat``.

So the README's figure is the network without them; the released code is registered beside it (the
layout a TF checkpoint trained with it would have). Neither reproduces the README's 407M FLOPs: these
count 468M, 469M and 535M multiply-adds at 224 (Conv + Linear, ../shared/families.md's "cnt").
Without the concatenations the first stages are a plain chain, as in MobileNet (additive skips there
would add no parameters, so the count cannot tell; the code's commented-out ``tf.add`` lines show the
authors tried them). The GM's and the second GCWM's residual adds are in every variant (``add21``,
``add23``). Dropout (keep 0.9999) is left out.

Module names follow the authors' variable scopes (``conv_1_0.conv1``, ``conv_2_2.group_1.conv_0.conv2``,
``conv_2_2.pure_conv``) so that :func:`remap_channelnet_tf` maps a TF checkpoint's variables (their
names and shapes, e.g. ``conv_2_2/pure_conv/pure_conv/kernel`` [8, 1, 1, 1, 2]) onto this layout by
renaming suffixes and transposing kernels. BatchNorm is tensorpack's (eps 1e-5, PyTorch's default).

Export notes (../shared/families.md, ChannelNets row):
- P-SAME: every conv and depthwise conv uses TF "SAME" padding, asymmetric at stride 2 on an even side
  (0 before, 1 after). :class:`Conv2dStaticSame` computes the pads from the traced H and W as Python
  ints, so they are constants: a zero Pad (0 before, 1 after) ahead of each of the five stride-2 convs,
  which the simplifier folds into the Conv's own asymmetric ``pads``, so the graph has no Pad node and
  no Shape subgraph for it; at stride 1 SAME is the symmetric ``padding=1``. With ``size_divisor=32``
  every stride-2 conv sees an even side, the case the weights were trained for.
- 3-D conv: TF's ``conv3d`` over ``expand_dims(x, 1)`` is not exported as an ONNX 3-D Conv. A kernel
  (d, kh, kw) on a 1-channel (C, H, W) volume with kh = kw = 1 (GCWM) or kh, kw = the map (CCL) equals
  a 2-D conv with kernel (d, kh * kw) over the (C, H * W) view of the map: :class:`ChannelwiseConv` is
  Reshape -> Conv (2-D, 1 input channel) -> Reshape, which ONNX Runtime, TensorRT and the INT8 tools
  take like any 2-D conv. Its ``weight`` keeps the 3-D kernel's shape, (maps, 1, d, kh, kw) (PyTorch's
  Conv3d layout of the authors' [d, kh, kw, 1, maps]); the 2-D view of it folds into the initializer.
- Dynamic batch: the first Reshape is a constant (-1, 1, C, H * W) (H and W are static in every
  export); the second takes the batch from the input's shape (a Shape -> Gather -> Concat), because
  with -1 the exporter's shape inference loses every dim, and the CCL's logits would get a symbolic
  class axis. Nothing else names the batch, so one graph runs at any batch (validated at 1 and 3).
- The CCL's (25, 7, 7) VALID kernel needs the 7x7 map of a 224 input: ``channelnet_v1_ccl`` is
  ``fixed_input_size`` (another size is rejected in one line; the model itself raises a ValueError).
  The FC head is a global average pool and takes any multiple of 32 (P-ADAPT does not apply).

Preprocessing is the authors' (tensorpack ``imgnet_util.py``): OpenCV BGR images, shortest edge resized
to 256 bicubic, center crop 224, scaled to 0-1 and normalised by the ImageNet mean/std in BGR order.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._layers import BatchNormAct2d, ClassifierHead, ConvNormAct
from ._registry import IMAGENET_MEAN, IMAGENET_STD, StateDict, register_model


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis: output ceil(size / stride), the odd one after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dStaticSame(nn.Conv2d):
    """A bias-free Conv2d with TF "SAME" padding, computed from the input's H and W as Python ints:
    constants under tracing (H and W are static in every export): a zero Pad where SAME is asymmetric
    (which onnxsim folds into the Conv's pads), a plain padded Conv elsewhere."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_chs, out_chs, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = (_same_pads(int(side), k, s)
                                        for side, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True))
        if (top, left) != (bottom, right):
            x, top, left = F.pad(x, (left, right, top, bottom)), 0, 0
        return F.conv2d(x, self.weight, None, self.stride, (top, left), groups=self.groups)


class ChannelwiseConv(nn.Conv3d):
    """TF ``conv3d`` over a map seen as a 1-channel (C, H, W) volume: ``maps`` kernels (depth, kh, kw) slide
    along the channels with ``stride`` (TF "SAME" along them, or "VALID"); the output maps are stacked
    on the channel axis, map m's C' channels at m * C' (the authors' ``unstack``/``concat`` order).

    Run as a 2-D conv over the (C, H * W) view, which equals the 3-D one where the kernel is 1x1 (it
    treats every pixel alike) or covers the whole map (VALID: one output pixel); the weight keeps the
    3-D kernel's (maps, 1, depth, kh, kw) shape, and the 2-D view of it folds into a constant on export.
    """

    def __init__(self, channels: int, maps: int, depth: int, stride: int = 1, spatial: int = 1, same: bool = True):
        super().__init__(1, maps, (depth, spatial, spatial), (stride, 1, 1), bias=False)
        self.channel_pads = _same_pads(channels, depth, stride) if same else (0, 0)
        self.out_channels_per_map = (channels + sum(self.channel_pads) - depth) // stride + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels, height, width = (int(side) for side in x.shape[1:])
        kernel_hw = self.kernel_size[1:]
        if kernel_hw != (1, 1) and kernel_hw != (height, width):
            raise ValueError(f"a {kernel_hw[0]}x{kernel_hw[1]} channel-wise kernel needs a map of that size "
                             f"(the CCL: a 224 input), got {height}x{width}")
        volume = x.reshape(-1, 1, channels, height * width)
        before, after = self.channel_pads
        if before != after:
            volume, before = F.pad(volume, (0, 0, before, after)), 0
        out = F.conv2d(volume, self.weight.flatten(3), None, self.stride[:2], (before, 0))
        out_hw = (height, width) if kernel_hw == (1, 1) else (1, 1)
        # The traced batch, not -1, which would cost the exporter's shape inference every dim (see above).
        return out.reshape(x.shape[0], self.out_channels * self.out_channels_per_map, *out_hw)


class SameConvNorm(nn.Module):
    """Bias-free conv with TF "SAME" padding -> BatchNorm (-> activation): the authors' ``ops.conv2d``,
    with the ``conv``/``bn`` names of the shared ``ConvNormAct``."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int = 1,
                 act_layer: type[nn.Module] | None = nn.ReLU6):
        super().__init__()
        self.conv = Conv2dStaticSame(in_chs, out_chs, kernel_size, stride)
        self.bn = BatchNormAct2d(out_chs, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class DepthwiseSeparable(nn.Module):
    """The authors' ``dw_block``: a 3x3 depthwise conv (SAME, no norm, no activation), then a 1x1 conv +
    BN + ReLU6 (at 1x1 SAME and PyTorch padding agree)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1):
        super().__init__()
        self.conv1 = Conv2dStaticSame(in_chs, in_chs, 3, stride, groups=in_chs)
        self.conv2 = ConvNormAct(in_chs, out_chs, 1, act_layer=nn.ReLU6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class GroupModule(nn.Module):
    """GM (``simple_group_block``): the channels split into ``groups`` equal parts, each through ``depth``
    dw_blocks of its own width (``group_0.conv_0`` ...), concatenated back in order."""

    def __init__(self, channels: int, groups: int, depth: int):
        super().__init__()
        width = channels // groups
        self.groups = groups
        for g in range(groups):
            blocks = OrderedDict((f"conv_{i}", DepthwiseSeparable(width, width)) for i in range(depth))
            self.add_module(f"group_{g}", nn.Sequential(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = x.chunk(self.groups, 1)
        return torch.cat([getattr(self, f"group_{g}")(part) for g, part in enumerate(parts)], 1)


class GroupChannelwiseModule(GroupModule):
    """GCWM (``conv_group_block``): a group channel-wise conv (kernel 4 * groups along the channels, stride
    ``groups``, one output map of C / groups channels per group) in place of the GM's split."""

    def __init__(self, channels: int, groups: int, depth: int):
        super().__init__(channels, groups, depth)
        self.pure_conv = ChannelwiseConv(channels, groups, 4 * groups, stride=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pure_conv(x))


class ConvClassifier(nn.Module):
    """CCL (``conv_out_block``): a 3x3 depthwise conv, then one VALID channel-wise kernel over the whole
    (C, map, map) volume, C - num_classes + 1 deep: num_classes logits, no bias."""

    def __init__(self, in_chs: int, num_classes: int, map_size: int = 7):
        super().__init__()
        if not 0 < num_classes <= in_chs:
            raise ValueError(f"the CCL maps {in_chs} channels to at most {in_chs} classes, got {num_classes}")
        self.conv = Conv2dStaticSame(in_chs, in_chs, 3, groups=in_chs)
        self.pure = ChannelwiseConv(in_chs, 1, in_chs - num_classes + 1, spatial=map_size, same=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pure(self.conv(x)).flatten(1)


class ChannelNet(nn.Module):
    def __init__(self, concat_skips: bool, ccl_head: bool, stem_chs: int = 32, groups: int = 2,
                 group_depth: int = 2, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        c = stem_chs
        self.concat_skips = concat_skips

        def skip_width(in_chs: int, out_chs: int) -> int:  # what follows a (concatenated) skip reads
            return in_chs + out_chs if concat_skips else out_chs

        self.conv_s = SameConvNorm(in_chans, c, 3, stride=2, act_layer=None)
        self.conv_1_0 = DepthwiseSeparable(c, 2 * c)
        self.conv_1_1 = DepthwiseSeparable(skip_width(c, 2 * c), 4 * c, stride=2)
        self.conv_1_2 = DepthwiseSeparable(4 * c, 4 * c)
        self.conv_1_3 = DepthwiseSeparable(skip_width(4 * c, 4 * c), 8 * c, stride=2)
        self.conv_1_4 = DepthwiseSeparable(8 * c, 8 * c)
        self.conv_1_5 = DepthwiseSeparable(skip_width(8 * c, 8 * c), 16 * c, stride=2)
        self.conv_2_1 = GroupModule(16 * c, groups, group_depth)
        self.conv_2_2 = GroupChannelwiseModule(16 * c, groups, group_depth)
        self.conv_2_3 = GroupChannelwiseModule(16 * c, groups, group_depth)
        self.conv_3_0 = DepthwiseSeparable(16 * c, 32 * c, stride=2)
        self.conv_3_1 = DepthwiseSeparable(32 * c, 32 * c)
        self.num_features = 32 * c
        self.head = ConvClassifier(32 * c, num_classes) if ccl_head else ClassifierHead(32 * c, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors' scale: every conv, channel-wise conv and the Linear normal with std 0.09, biases 0;
        BatchNorm weight 1, bias 0. Theirs is truncated at 2 std; torch's rejection sampler for that
        costs a second per build, and random weights only need the scale."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d | nn.Linear):
                nn.init.normal_(m.weight, std=0.09)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _skip(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, out], 1) if self.concat_skips else out

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_s(x)
        x = self._skip(x, self.conv_1_0(x))
        x = self.conv_1_1(x)
        x = self._skip(x, self.conv_1_2(x))
        x = self.conv_1_3(x)
        x = self._skip(x, self.conv_1_4(x))
        x = self.conv_1_5(x)
        x = x + self.conv_2_1(x)
        x = self.conv_2_2(x)
        x = x + self.conv_2_3(x)
        return self.conv_3_1(self.conv_3_0(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# TF variable suffix -> our key's suffix and the permutation from TF's kernel layout to PyTorch's. Order
# matters: ``/dense/weights`` before ``/weights``. The TF names come from the authors' scopes, e.g.
# ``conv_1_0/conv1/conv/weight_depths`` (dw_conv2d), ``conv_1_0/conv2/weights`` and
# ``conv_1_0/conv2/bn/mean/EMA`` (contrib conv2d + tensorpack BatchNorm), ``out/dense/biases``.
_TF_SUFFIXES = (
    ("/dense/weights", ".fc.weight", (1, 0)),  # fully_connected [in, out]
    ("/dense/biases", ".fc.bias", None),
    ("/conv/weight_depths", ".weight", (2, 3, 0, 1)),  # depthwise [kh, kw, C, 1] -> (C, 1, kh, kw)
    ("/pure_conv/kernel", ".weight", (4, 3, 0, 1, 2)),  # conv3d [d, kh, kw, 1, maps] -> (maps, 1, d, kh, kw)
    ("/weights", ".conv.weight", (3, 2, 0, 1)),  # conv2d [kh, kw, in, out] -> (out, in, kh, kw)
    ("/bn/gamma", ".bn.weight", None),
    ("/bn/beta", ".bn.bias", None),
    ("/bn/mean/EMA", ".bn.running_mean", None),
    ("/bn/variance/EMA", ".bn.running_var", None),
)
_TF_HEAD = re.compile(r"^out/")  # the authors' head scope; ours is ``head``


def remap_channelnet_tf(state: StateDict) -> dict[str, torch.Tensor]:
    """A TF checkpoint's variables, by name (``tf.train.load_checkpoint`` dumped to .safetensors or .pth),
    -> our keys and layouts. Variables no rule names (``global_step``, optimizer slots such as
    ``conv_s/weights/Momentum``) are dropped; the BatchNorm counters TF has no use for are added."""
    ours = {}
    for name, value in state.items():
        for suffix, replacement, permutation in _TF_SUFFIXES:
            if name.endswith(suffix):
                key = _TF_HEAD.sub("head/", name)[: -len(suffix)].replace("/", ".") + replacement
                ours[key] = value.permute(permutation).contiguous() if permutation else value
                if replacement == ".bn.running_mean":
                    ours[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(0)
                break
    return ours


@dataclass(frozen=True)
class ChannelNetConfig:
    concat_skips: bool  # model.py's tf.concat of each first-stage stride-1 dw_block with its input
    ccl_head: bool  # the CCL (conv_out_block) in place of global mean + Linear (out_block)


_CONFIGS = {
    "channelnet_v1": ChannelNetConfig(concat_skips=False, ccl_head=False),
    "channelnet_v1_ccl": ChannelNetConfig(concat_skips=False, ccl_head=True),
    "channelnet_v1_concat": ChannelNetConfig(concat_skips=True, ccl_head=False),
}


def _create_channelnet(name: str, **overrides) -> ChannelNet:
    cfg = _CONFIGS[name]
    return ChannelNet(cfg.concat_skips, cfg.ccl_head, **overrides)


_PAPER = ("Gao, Wang and Ji, ChannelNets: Compact and Efficient Convolutional Neural Networks via Channel-Wise "
          "Convolutions, NeurIPS 2018")
# The authors' eval transform: BGR, bicubic shortest edge 256, crop 224, 0-1, ImageNet mean/std in BGR order.
_SPEC = dict(family="channelnet", paper=_PAPER, channel_order="BGR", mean=IMAGENET_MEAN[::-1],
             std=IMAGENET_STD[::-1], interpolation="bicubic", crop_pct=0.875, remap=remap_channelnet_tf)


# README 3.7M (no exact count published): 3,703,432 counted here, see the module docstring.
@register_model(**_SPEC, reference_params=3_700_000, params_tolerance=0.02)
def channelnet_v1(**overrides) -> ChannelNet:
    return _create_channelnet("channelnet_v1", **overrides)


# No published figure: the count derived in the module docstring, checked exactly.
@register_model(**_SPEC, reference_params=2_688_873, fixed_input_size=True)
def channelnet_v1_ccl(**overrides) -> ChannelNet:
    return _create_channelnet("channelnet_v1_ccl", **overrides)


# model.py as released (with its concatenations): the count derived in the module docstring, exactly.
@register_model(**_SPEC, reference_params=3_875_112)
def channelnet_v1_concat(**overrides) -> ChannelNet:
    return _create_channelnet("channelnet_v1_concat", **overrides)
