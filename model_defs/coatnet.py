"""CoAtNet.

Paper: "CoAtNet: Marrying Convolution and Attention for All Data Sizes" (Dai et al., NeurIPS 2021).

A two-conv stem (stride 2), two stages of MBConv blocks (strides 4 and 8), then two stages of
transformer blocks with relative-position attention over the *whole* feature map (strides 16 and
32), a global average and a classifier. Every stage starts by halving the resolution: MBConv
blocks and transformer blocks alike take a 2x2 average-pooled, 1x1-widened shortcut.

Two configurations, both with timm's module names (``timm/models/maxxvit.py``):

- ``coatnet_0_224``, the paper's CoAtNet-0: depths 2-3-5-2, GELU MBConvs that stride in the
  depthwise conv, SE after the second norm, qkv at the output width, and a pre-logits head
  (LayerNorm -> Linear 768 -> tanh). timm defines it without weights; 25,036,820 parameters.
- ``coatnet_0_rw_224``, timm's variant with ImageNet weights (82.4% top-1): depths 2-3-7-2, SiLU
  MBConvs that stride by average pooling, an activation after the pre-norm, expansion from the
  input width, SE (ReLU) before the second norm, no bias on the MBConv projections or the
  transformer shortcut, attention at the input width widened by the output projection, and a
  LayerNorm + Linear head; 27,435,562 parameters.

Export notes: the attention bias is ``table[index]`` with the index built for one feature-map size
(P-RELIDX). It is gathered in every forward and folds into a constant at export, but the window
is the full map, so the graph only takes 224x224: ``fixed_input_size=True``. LayerNorm2d stays one
``LayerNormalization`` at opset 17 (P-LN).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._layers import BatchNormAct2d, ClassifierHead, LayerNorm2d, global_avg_pool, make_divisible
from ._registry import INCEPTION_MEAN, INCEPTION_STD, register_model

TRANSFORMER_NORM_EPS = 1e-6


class Downsample2d(nn.Sequential):
    """2x2 average pool, then a 1x1 conv where the width changes: the stride-2 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool):
        super().__init__(OrderedDict(
            pool=nn.AvgPool2d(2),
            expand=nn.Conv2d(in_ch, out_ch, 1, bias=bias) if in_ch != out_ch else nn.Identity(),
        ))


class SqueezeExcite(nn.Module):
    """SE with the ``fc1``/``fc2`` names of timm's ``SEModule`` (maxxvit's checkpoints use these,
    unlike the ``conv_reduce``/``conv_expand`` of ``_layers.SqueezeExcite``)."""

    def __init__(self, channels: int, rd_channels: int, act_layer: type[nn.Module]):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(rd_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc2(self.act(self.fc1(global_avg_pool(x)))).sigmoid()


@dataclass(frozen=True)
class CoAtNetConfig:
    depths: tuple[int, int, int, int]
    stem_width: tuple[int, int]
    act_layer: type[nn.Module]  # MBConv and stem activation
    pre_norm_act: bool  # activation after the MBConv pre-norm
    stride_by_pool: bool  # MBConv strides by a 2x2 avg pool before the expansion (else in the dw conv)
    expand_from_input: bool  # MBConv hidden width = 4 x input width (else 4 x output width)
    conv_output_bias: bool  # bias on the MBConv shortcut and output projection
    se_early: bool  # SE between the depthwise conv and its norm (else after the norm)
    se_act: type[nn.Module]
    attn_expand_first: bool  # qkv at the output width (else at the input width, widened by proj)
    attn_shortcut_bias: bool  # bias on the transformer stride-2 shortcut conv
    head_hidden: int | None  # pre-logits width (LayerNorm -> Linear -> tanh); None: LayerNorm + Linear
    embed_dim: tuple[int, int, int, int] = (96, 192, 384, 768)


class MbConvBlock(nn.Module):
    """Pre-norm inverted bottleneck: BN -> 1x1 expand (x4) -> 3x3 depthwise -> SE -> 1x1 project."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, cfg: CoAtNetConfig):
        super().__init__()
        mid = make_divisible(4 * (in_ch if cfg.expand_from_input else out_ch))
        self.shortcut = Downsample2d(in_ch, out_ch, cfg.conv_output_bias) if stride == 2 else nn.Identity()
        self.pre_norm = BatchNormAct2d(in_ch, cfg.act_layer if cfg.pre_norm_act else None)
        pool_stride = stride == 2 and cfg.stride_by_pool
        self.down = nn.AvgPool2d(2) if pool_stride else nn.Identity()
        self.conv1_1x1 = nn.Conv2d(in_ch, mid, 1, bias=False)
        self.norm1 = BatchNormAct2d(mid, cfg.act_layer)
        self.conv2_kxk = nn.Conv2d(mid, mid, 3, 1 if pool_stride else stride, 1, groups=mid, bias=False)
        se = SqueezeExcite(mid, int(0.25 * (mid if cfg.expand_from_input else out_ch)), cfg.se_act)
        self.se_early = se if cfg.se_early else None
        self.norm2 = BatchNormAct2d(mid, cfg.act_layer)
        self.se = None if cfg.se_early else se
        self.conv3_1x1 = nn.Conv2d(mid, out_ch, 1, bias=cfg.conv_output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.conv2_kxk(self.norm1(self.conv1_1x1(self.down(self.pre_norm(x)))))
        if self.se_early is not None:
            x = self.se_early(x)
        x = self.norm2(x)
        if self.se is not None:
            x = self.se(x)
        return self.conv3_1x1(x) + shortcut


class RelPosBias(nn.Module):
    """A learned bias per head for every (dy, dx) offset inside a ``size`` x ``size`` map."""

    def __init__(self, size: int, num_heads: int):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        ys, xs = (t.flatten() for t in torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij"))
        dy = ys[:, None] - ys[None, :] + size - 1
        dx = xs[:, None] - xs[None, :] + size - 1
        # Derived from the size, never trained or saved (timm does not save it either).
        self.register_buffer("relative_position_index", dy * (2 * size - 1) + dx, persistent=False)

    def forward(self) -> torch.Tensor:
        """The (heads, queries, keys) bias; a constant-folded Gather at export."""
        return self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)


class Attention2d(nn.Module):
    """Multi-head self-attention over every position of an NCHW map, with 1x1-conv projections.

    The qkv channels are grouped per head ([q, k, v] of head 0, then head 1, ...), as in timm."""

    def __init__(self, dim: int, dim_out: int, feat_size: int, expand_first: bool, dim_head: int = 32):
        super().__init__()
        dim_attn = dim_out if expand_first else dim
        self.num_heads = dim_attn // dim_head
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.qkv = nn.Conv2d(dim, dim_attn * 3, 1)
        self.rel_pos = RelPosBias(feat_size, self.num_heads)
        self.proj = nn.Conv2d(dim_attn, dim_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        q, k, v = self.qkv(x).reshape(-1, self.num_heads, 3 * self.dim_head, h * w).chunk(3, dim=2)
        attn = (q * self.scale).transpose(-2, -1) @ k + self.rel_pos()
        x = v @ attn.softmax(dim=-1).transpose(-2, -1)
        return self.proj(x.reshape(-1, self.num_heads * self.dim_head, h, w))


class ConvMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TransformerBlock2d(nn.Module):
    """Pre-norm transformer block on NCHW maps; a stride-2 block pools after its first norm."""

    def __init__(self, dim: int, dim_out: int, stride: int, feat_size: int, cfg: CoAtNetConfig):
        super().__init__()
        norm = LayerNorm2d(dim, eps=TRANSFORMER_NORM_EPS)
        if stride == 2:
            self.shortcut = Downsample2d(dim, dim_out, cfg.attn_shortcut_bias)
            self.norm1 = nn.Sequential(OrderedDict(norm=norm, down=nn.AvgPool2d(2)))
        else:
            self.shortcut = nn.Identity()
            self.norm1 = norm
        self.attn = Attention2d(dim, dim_out, feat_size, cfg.attn_expand_first)
        self.norm2 = LayerNorm2d(dim_out, eps=TRANSFORMER_NORM_EPS)
        self.mlp = ConvMlp(dim_out, 4 * dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shortcut(x) + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CoAtNetStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, depth: int, transformer: bool, feat_size: int,
                 cfg: CoAtNetConfig):
        super().__init__()
        blocks = []
        for i in range(depth):
            stride = 2 if i == 0 else 1
            if transformer:
                blocks.append(TransformerBlock2d(in_ch, out_ch, stride, feat_size, cfg))
            else:
                blocks.append(MbConvBlock(in_ch, out_ch, stride, cfg))
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    def __init__(self, in_ch: int, widths: tuple[int, int], act_layer: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, widths[0], 3, 2, 1, bias=False)
        self.norm1 = BatchNormAct2d(widths[0], act_layer)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


class NormMlpClassifierHead(nn.Module):
    """Global average -> LayerNorm -> Linear + tanh (pre-logits) -> Linear: the paper's head."""

    def __init__(self, dim: int, hidden: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=TRANSFORMER_NORM_EPS)
        self.pre_logits = nn.Sequential(OrderedDict(fc=nn.Linear(dim, hidden), act=nn.Tanh()))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(self.norm(x.mean((2, 3)))))


class CoAtNet(nn.Module):
    def __init__(self, cfg: CoAtNetConfig, img_size: int = 224, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.stem = Stem(in_chans, cfg.stem_width, cfg.act_layer)
        in_ch, feat_size = cfg.stem_width[1], img_size // 2
        stages = []
        for i, (out_ch, depth) in enumerate(zip(cfg.embed_dim, cfg.depths, strict=True)):
            feat_size = (feat_size - 1) // 2 + 1
            stages.append(CoAtNetStage(in_ch, out_ch, depth, i >= 2, feat_size, cfg))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        if cfg.head_hidden:
            self.norm = nn.Identity()  # the head normalises the pooled features
            self.head = NormMlpClassifierHead(in_ch, cfg.head_hidden, num_classes)
        else:
            self.norm = LayerNorm2d(in_ch, eps=TRANSFORMER_NORM_EPS)
            self.head = ClassifierHead(in_ch, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_CONFIGS = {
    "coatnet_0_224": CoAtNetConfig(
        depths=(2, 3, 5, 2), stem_width=(64, 64), act_layer=nn.GELU, pre_norm_act=False, stride_by_pool=False,
        expand_from_input=False, conv_output_bias=True, se_early=False, se_act=nn.SiLU, attn_expand_first=True,
        attn_shortcut_bias=True, head_hidden=768),
    "coatnet_0_rw_224": CoAtNetConfig(
        depths=(2, 3, 7, 2), stem_width=(32, 64), act_layer=nn.SiLU, pre_norm_act=True, stride_by_pool=True,
        expand_from_input=True, conv_output_bias=False, se_early=True, se_act=nn.ReLU, attn_expand_first=False,
        attn_shortcut_bias=False, head_hidden=None),
}


def _create_coatnet(name: str, **overrides) -> CoAtNet:
    return CoAtNet(_CONFIGS[name], **overrides)


_PAPER = "Dai et al., CoAtNet: Marrying Convolution and Attention for All Data Sizes, NeurIPS 2021"
# timm's maxxvit eval transform (mean/std 0.5, bicubic, crop 0.95); full-map attention fixes 224.
_SPEC = dict(family="coatnet", paper=_PAPER, mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic",
             crop_pct=0.95, fixed_input_size=True)


@register_model(**_SPEC, reference="timm:coatnet_0_224", reference_params=25_036_820)
def coatnet_0_224(**overrides) -> CoAtNet:
    return _create_coatnet("coatnet_0_224", **overrides)


@register_model(**_SPEC, reference="timm:coatnet_0_rw_224", reference_params=27_435_562)
def coatnet_0_rw_224(**overrides) -> CoAtNet:
    return _create_coatnet("coatnet_0_rw_224", **overrides)
