"""Pyramid Vision Transformer, v1 and v2.

Papers: "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without
Convolutions" (Wang et al., ICCV 2021); "PVT v2: Improved Baselines with Pyramid Vision
Transformer" (Wang et al., CVMJ 2022).

Four stages of transformer blocks at strides 4-32. Spatial-reduction attention keeps the cost
down: keys and values come from the tokens shrunk by a conv with kernel = stride = ``sr_ratio``,
then a LayerNorm.

- **v2** (``pvt_v2_b*``) embeds patches with overlapping convs (7x7/4, then 3x3/2), has no position
  embedding (a 3x3 depthwise conv inside each MLP gives position information) and averages the
  final feature map. Module names are timm's (``timm/models/pvt_v2.py``), so its state_dicts load
  directly. It takes any input size that is a multiple of 32.
- **v1** (``pvt_tiny``, ``pvt_small``) embeds non-overlapping patches (4x4, then 2x2), adds a learned
  position embedding per stage and classifies a cls token appended in the last stage. Neither timm
  nor torchvision has it; module names are the authors' (whai362/PVT ``classification/pvt.py``),
  whose checkpoints therefore load directly. Counted against that code: 13,229,288 (Tiny) and
  24,485,864 (Small) parameters.

v1 input size: the position embeddings are tables for the 224x224 token grids. The authors'
forward resizes them bilinearly whenever a stage's token count differs from stage 1's, so at 224
stages 2-4 go through a same-size bilinear resize (an identity, but a Resize in the graph,
P-INTERP). Here the tables are added as they are, and the variants are ``fixed_input_size=True``:
another ``--img-size`` is rejected by the spec. Supporting it would mean resampling the tables once
on the weights, which needs the pipeline to build the model at the requested size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ._registry import register_model

# The transformer-block and stage norms use eps 1e-6 in both versions; the patch-embedding and
# spatial-reduction norms keep nn.LayerNorm's default 1e-5.
NORM_EPS = 1e-6


def _init_linears(model: nn.Module) -> None:
    """The authors' (and timm's) init: truncated-normal Linear weights, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from an ``sr_ratio``-times smaller grid."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = None

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:  # (B, N, C)
        _, n, c = x.shape
        q = self.q(x).reshape(-1, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        if self.sr is not None:
            x = x.transpose(1, 2).reshape(-1, c, *hw)
            x = self.norm(self.sr(x).flatten(2).transpose(1, 2))
        kv = self.kv(x).reshape(-1, x.shape[1], 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, n, c))


class Mlp(nn.Module):
    """fc1 -> [3x3 depthwise conv on the token grid, v2 only] -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int, dwconv: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden) if dwconv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            n, c = x.shape[1:]
            x = self.dwconv(x.transpose(1, 2).reshape(-1, c, *hw)).reshape(-1, c, n).transpose(1, 2)
        return self.fc2(self.act(x))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, dwconv: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dwconv)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), hw)
        return x + self.mlp(self.norm2(x), hw)


class PatchEmbed(nn.Module):
    """Conv patch embedding + LayerNorm: (B, C, H, W) -> (B, H', W', C')."""

    def __init__(self, in_ch: int, dim: int, patch_size: int, stride: int, padding: int = 0):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch_size, stride, padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


@dataclass(frozen=True)
class PvtConfig:
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, float, float, float] = (8, 8, 4, 4)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)


class PvtV2Stage(nn.Module):
    def __init__(self, in_ch: int, dim: int, depth: int, num_heads: int, mlp_ratio: float, sr_ratio: int,
                 downsample: bool):
        super().__init__()
        # The first stage's 7x7/4 embedding lives on the model (timm's ``patch_embed``).
        self.downsample = PatchEmbed(in_ch, dim, 3, 2, padding=1) if downsample else None
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, sr_ratio, dwconv=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:  # (B, C, H, W) from the previous stage
            x = self.downsample(x)
        _, h, w, c = x.shape  # (B, H, W, C)
        x = x.reshape(-1, h * w, c)
        for block in self.blocks:
            x = block(x, (h, w))
        return self.norm(x).reshape(-1, h, w, c).permute(0, 3, 1, 2)


class PyramidVisionTransformerV2(nn.Module):
    def __init__(self, cfg: PvtConfig, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, cfg.embed_dims[0], 7, 4, padding=3)
        in_ch = cfg.embed_dims[0]
        stages = []
        for i, (dim, depth, heads, mlp, sr) in enumerate(zip(
                cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.mlp_ratios, cfg.sr_ratios, strict=True)):
            stages.append(PvtV2Stage(in_ch, dim, depth, heads, mlp, sr, downsample=i > 0))
            in_ch = dim
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_ch, num_classes)
        _init_linears(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.patch_embed(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


class PyramidVisionTransformerV1(nn.Module):
    """The authors' flat layout: ``patch_embed{i}``, ``pos_embed{i}``, ``block{i}`` for stages 1-4."""

    def __init__(self, cfg: PvtConfig, img_size: int = 224, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.num_stages = len(cfg.depths)
        in_ch, grid = in_chans, img_size // 4
        for i, (dim, depth, heads, mlp, sr) in enumerate(zip(
                cfg.embed_dims, cfg.depths, cfg.num_heads, cfg.mlp_ratios, cfg.sr_ratios, strict=True)):
            patch = 4 if i == 0 else 2
            grid = img_size // 4 if i == 0 else grid // 2
            last = i == self.num_stages - 1
            tokens = grid * grid + (1 if last else 0)  # the last stage's table has a cls-token row
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(in_ch, dim, patch, patch))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, tokens, dim)))
            setattr(self, f"block{i + 1}", nn.ModuleList(
                Block(dim, heads, mlp, sr, dwconv=False) for _ in range(depth)))
            in_ch = dim
        self.norm = nn.LayerNorm(in_ch, eps=NORM_EPS)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, in_ch))
        self.head = nn.Linear(in_ch, num_classes)
        for i in range(self.num_stages):
            nn.init.trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        _init_linears(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}")(x)
            _, h, w, c = x.shape
            x = x.reshape(-1, h * w, c)
            if i == self.num_stages:
                x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            x = x + getattr(self, f"pos_embed{i}")
            for block in getattr(self, f"block{i}"):
                x = block(x, (h, w))
            if i < self.num_stages:
                x = x.reshape(-1, h, w, c).permute(0, 3, 1, 2)
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


_CONFIGS = {
    "pvt_v2_b0": PvtConfig((32, 64, 160, 256), (2, 2, 2, 2)),
    "pvt_v2_b1": PvtConfig((64, 128, 320, 512), (2, 2, 2, 2)),
    "pvt_v2_b2": PvtConfig((64, 128, 320, 512), (3, 4, 6, 3)),
    "pvt_tiny": PvtConfig((64, 128, 320, 512), (2, 2, 2, 2)),
    "pvt_small": PvtConfig((64, 128, 320, 512), (3, 4, 6, 3)),
}


def _create_pvt(name: str, **overrides) -> nn.Module:
    cls = PyramidVisionTransformerV2 if name.startswith("pvt_v2") else PyramidVisionTransformerV1
    return cls(_CONFIGS[name], **overrides)


_PAPER_V1 = ("Wang et al., Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without "
             "Convolutions, ICCV 2021")
_PAPER_V2 = "Wang et al., PVT v2: Improved Baselines with Pyramid Vision Transformer, CVMJ 2022"
# v2: timm's pvt_v2_*.in1k eval transform. v1: the DeiT eval transform of the authors' code base
# (bicubic resize to 256, centre crop 224).
_SPEC_V2 = dict(family="pvt", paper=_PAPER_V2, interpolation="bicubic", crop_pct=0.9)
_SPEC_V1 = dict(family="pvt", paper=_PAPER_V1, interpolation="bicubic", crop_pct=0.875, fixed_input_size=True)


@register_model(**_SPEC_V2, reference="timm:pvt_v2_b0", reference_params=3_666_760)
def pvt_v2_b0(**overrides) -> PyramidVisionTransformerV2:
    return _create_pvt("pvt_v2_b0", **overrides)


@register_model(**_SPEC_V2, reference="timm:pvt_v2_b1", reference_params=14_009_000)
def pvt_v2_b1(**overrides) -> PyramidVisionTransformerV2:
    return _create_pvt("pvt_v2_b1", **overrides)


@register_model(**_SPEC_V2, reference="timm:pvt_v2_b2", reference_params=25_362_856)
def pvt_v2_b2(**overrides) -> PyramidVisionTransformerV2:
    return _create_pvt("pvt_v2_b2", **overrides)


@register_model(**_SPEC_V1, reference_params=13_229_288)
def pvt_tiny(**overrides) -> PyramidVisionTransformerV1:
    return _create_pvt("pvt_tiny", **overrides)


@register_model(**_SPEC_V1, reference_params=24_485_864)
def pvt_small(**overrides) -> PyramidVisionTransformerV1:
    return _create_pvt("pvt_small", **overrides)
