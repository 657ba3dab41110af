"""LeViT.

Paper: "LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference" (Graham et al.,
ICCV 2021).

A stride-16 conv stem (four 3x3/2 conv+BN, Hardswish between them) feeds three stages of attention
blocks on a token sequence. Every Linear is followed by a BatchNorm over tokens instead of a
LayerNorm; each attention head adds a learned bias indexed by the absolute (dy, dx) offset between
query and key positions. Between stages an attention block subsamples its queries 2x ("shrink
attention"). Two classifier heads (class and distillation) are averaged at inference.

Module names are timm's (``timm/models/levit.py``, the linear-mode ``levit_*`` models), so its
state_dicts load directly.

Export notes:
- timm caches ``attention_biases[:, attention_bias_idxs]`` per device in eval mode. Here the bias is
  gathered in every forward: it traces to a Gather on two constants, which the simplifier folds into
  one constant tensor per attention layer. No cache, no per-device state (P-RELIDX).
- The bias index is built for one token grid, so the graph only takes the training resolution:
  ``fixed_input_size=True``.
- ``nn.Hardswish`` exports as one ``HardSwish`` from opset 14 and as ``x * HardSigmoid`` below it
  (P-HSWISH); both validate.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_model


class ConvNorm(nn.Sequential):
    """Conv (no bias) + BatchNorm2d: one stride-2 step of the stem."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 2, padding: int = 1):
        super().__init__(OrderedDict(
            linear=nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=False),
            bn=nn.BatchNorm2d(out_ch),
        ))


class LinearNorm(nn.Module):
    """Linear (no bias) + BatchNorm1d over every token of every image: LeViT's LayerNorm-free Linear."""

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = nn.BatchNorm1d(out_features)
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        x = self.linear(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class NormLinear(nn.Module):
    """BatchNorm1d + Linear: a classifier head."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(in_features)
        self.linear = nn.Linear(in_features, out_features)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.bn(x))


def relative_bias_index(resolution: int, stride: int = 1) -> torch.Tensor:
    """Index into a per-head bias table of ``resolution**2`` entries for every (query, key) pair.

    Queries sit on the key grid subsampled by ``stride``; the index is ``|dy| * resolution + |dx|``,
    so offsets that mirror each other share one learned bias.
    """
    keys = torch.arange(resolution)
    queries = torch.arange(0, resolution, stride)
    ky, kx = (t.flatten() for t in torch.meshgrid(keys, keys, indexing="ij"))
    qy, qx = (t.flatten() for t in torch.meshgrid(queries, queries, indexing="ij"))
    return (qy[:, None] - ky[None, :]).abs() * resolution + (qx[:, None] - kx[None, :]).abs()


class _BiasedAttention(nn.Module):
    """The learned attention-bias table and its (query, key) index, shared by both attention kinds."""

    def __init__(self, num_heads: int, resolution: int, stride: int = 1):
        super().__init__()
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution * resolution))
        # Derived from the resolution, never trained or saved (timm does not save it either).
        self.register_buffer("attention_bias_idxs", relative_bias_index(resolution, stride), persistent=False)

    def attention_bias(self) -> torch.Tensor:
        # Gathered on every call, not cached: constant-folded at export, always current in training.
        return self.attention_biases[:, self.attention_bias_idxs]


class Attention(_BiasedAttention):
    """Multi-head self-attention over the token grid; values are ``attn_ratio`` times wider than keys."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, resolution: int):
        super().__init__(num_heads, resolution)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Sequential(OrderedDict(
            act=nn.Hardswish(),
            ln=LinearNorm(num_heads * self.val_dim, dim, bn_weight_init=0.0),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, _ = x.shape
        qkv = self.qkv(x).reshape(-1, n, self.num_heads, 2 * self.key_dim + self.val_dim)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) * self.scale + self.attention_bias()
        x = attn.softmax(dim=-1) @ v.permute(0, 2, 1, 3)
        return self.proj(x.transpose(1, 2).reshape(-1, n, self.num_heads * self.val_dim))


class Subsample(nn.Module):
    """Keep every ``stride``-th token of the ``resolution`` x ``resolution`` grid in both directions."""

    def __init__(self, stride: int, resolution: int):
        super().__init__()
        self.stride = stride
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, self.resolution, self.resolution, x.shape[-1])[:, :: self.stride, :: self.stride]
        return x.reshape(-1, x.shape[1] * x.shape[2], x.shape[3])


class AttentionSubsample(_BiasedAttention):
    """Shrink attention: queries from a 2x-subsampled grid attend to every key; widens the channels."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: float,
                 resolution: int, stride: int = 2):
        super().__init__(num_heads, resolution, stride)
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = int(attn_ratio * key_dim)
        self.scale = key_dim ** -0.5
        self.kv = LinearNorm(in_dim, num_heads * (key_dim + self.val_dim))
        self.q = nn.Sequential(OrderedDict(
            down=Subsample(stride, resolution),
            ln=LinearNorm(in_dim, num_heads * key_dim),
        ))
        self.proj = nn.Sequential(OrderedDict(
            act=nn.Hardswish(),
            ln=LinearNorm(num_heads * self.val_dim, out_dim),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, n, _ = x.shape
        kv = self.kv(x).reshape(-1, n, self.num_heads, self.key_dim + self.val_dim)
        k, v = kv.split([self.key_dim, self.val_dim], dim=3)
        q = self.q(x)
        n_q = q.shape[1]
        q = q.reshape(-1, n_q, self.num_heads, self.key_dim).permute(0, 2, 1, 3)
        attn = q @ k.permute(0, 2, 3, 1) * self.scale + self.attention_bias()
        x = attn.softmax(dim=-1) @ v.permute(0, 2, 1, 3)
        return self.proj(x.transpose(1, 2).reshape(-1, n_q, self.num_heads * self.val_dim))


class LevitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.ln1 = LinearNorm(dim, hidden)
        self.act = nn.Hardswish()
        self.ln2 = LinearNorm(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.act(self.ln1(x)))


class LevitBlock(nn.Module):
    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float, mlp_ratio: float,
                 resolution: int):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio, resolution)
        self.mlp = LevitMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class LevitDownsample(nn.Module):
    """Shrink attention (no residual: the token count changes) followed by a residual MLP."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, resolution: int):
        super().__init__()
        # The paper's shrink block: in_dim / key_dim heads, values 4x the key width, MLP ratio 2.
        self.attn_downsample = AttentionSubsample(in_dim, out_dim, key_dim, in_dim // key_dim, 4.0, resolution)
        self.mlp = LevitMlp(out_dim, out_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_downsample(x)
        return x + self.mlp(x)


class LevitStage(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, key_dim: int, depth: int, num_heads: int, resolution: int,
                 downsample: bool, attn_ratio: float = 2.0, mlp_ratio: float = 2.0):
        super().__init__()
        if downsample:
            self.downsample = LevitDownsample(in_dim, out_dim, key_dim, resolution)
            resolution = (resolution - 1) // 2 + 1
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*(
            LevitBlock(out_dim, key_dim, num_heads, attn_ratio, mlp_ratio, resolution) for _ in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class Stem16(nn.Sequential):
    """Four 3x3 stride-2 conv+BN with Hardswish between them: 224 -> 14x14 tokens."""

    def __init__(self, in_ch: int, out_ch: int):
        widths = (in_ch, out_ch // 8, out_ch // 4, out_ch // 2, out_ch)
        layers = OrderedDict()
        for i in range(4):
            layers[f"conv{i + 1}"] = ConvNorm(widths[i], widths[i + 1])
            if i < 3:
                layers[f"act{i + 1}"] = nn.Hardswish()
        super().__init__(layers)


class Levit(nn.Module):
    """LeViT with its distillation head; inference averages the two heads' logits."""

    STEM_STRIDE = 16

    def __init__(self, embed_dim: tuple[int, ...], key_dim: int, num_heads: tuple[int, ...],
                 depth: tuple[int, ...], img_size: int = 224, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.stem = Stem16(in_chans, embed_dim[0])
        resolution = img_size // self.STEM_STRIDE
        stages = []
        in_dim = embed_dim[0]
        for i, (dim, heads, blocks) in enumerate(zip(embed_dim, num_heads, depth, strict=True)):
            stages.append(LevitStage(in_dim, dim, key_dim, blocks, heads, resolution, downsample=i > 0))
            if i > 0:
                resolution = (resolution - 1) // 2 + 1
            in_dim = dim
        self.stages = nn.Sequential(*stages)
        self.head = NormLinear(embed_dim[-1], num_classes)
        self.head_dist = NormLinear(embed_dim[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)  # (B, tokens, C)
        return self.stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean(dim=1)
        return (self.head(x) + self.head_dist(x)) / 2


@dataclass(frozen=True)
class LevitConfig:
    embed_dim: tuple[int, int, int]
    key_dim: int
    num_heads: tuple[int, int, int]
    depth: tuple[int, int, int]


_CONFIGS = {
    "levit_128s": LevitConfig((128, 256, 384), 16, (4, 6, 8), (2, 3, 4)),
    "levit_128": LevitConfig((128, 256, 384), 16, (4, 8, 12), (4, 4, 4)),
    "levit_192": LevitConfig((192, 288, 384), 32, (3, 5, 6), (4, 4, 4)),
    "levit_256": LevitConfig((256, 384, 512), 32, (4, 6, 8), (4, 4, 4)),
    "levit_384": LevitConfig((384, 512, 768), 32, (6, 9, 12), (4, 4, 4)),
}


def _create_levit(name: str, **overrides) -> Levit:
    cfg = _CONFIGS[name]
    return Levit(cfg.embed_dim, cfg.key_dim, cfg.num_heads, cfg.depth, **overrides)


_PAPER = "Graham et al., LeViT: a Vision Transformer in ConvNet's Clothing for Faster Inference, ICCV 2021"
# timm's levit_*.fb_dist_in1k eval transform; the bias index bakes the 14x14 token grid in.
_SPEC = dict(family="levit", paper=_PAPER, interpolation="bicubic", crop_pct=0.9, size_divisor=16,
             fixed_input_size=True)


@register_model(**_SPEC, reference="timm:levit_128s", reference_params=7_777_058)
def levit_128s(**overrides) -> Levit:
    return _create_levit("levit_128s", **overrides)


@register_model(**_SPEC, reference="timm:levit_128", reference_params=9_213_936)
def levit_128(**overrides) -> Levit:
    return _create_levit("levit_128", **overrides)


@register_model(**_SPEC, reference="timm:levit_192", reference_params=10_947_069)
def levit_192(**overrides) -> Levit:
    return _create_levit("levit_192", **overrides)


@register_model(**_SPEC, reference="timm:levit_256", reference_params=18_893_876)
def levit_256(**overrides) -> Levit:
    return _create_levit("levit_256", **overrides)


@register_model(**_SPEC, reference="timm:levit_384", reference_params=39_128_836)
def levit_384(**overrides) -> Levit:
    return _create_levit("levit_384", **overrides)
