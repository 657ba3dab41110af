"""Vision Transformer (ViT).

Paper: "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale"
(Dosovitskiy et al., ICLR 2021); the Ti/16 and S/16 widths are DeiT's (Touvron et al., ICML 2021).

The image is cut into ``patch x patch`` tiles by a strided conv, a learned class token is prepended,
a learned absolute position embedding is added, and pre-norm transformer blocks follow; the class
token's final state feeds the classifier. Module names are timm's (``patch_embed.proj``,
``blocks.0.attn.qkv``, ``head``); torchvision's ``vit_b_16``/``vit_l_16``/``vit_h_14`` checkpoints
load through :func:`remap_torchvision_vit`.

Export notes:
- Attention is written out as MatMul -> Softmax -> MatMul. Fused scaled-dot-product kernels add
  nothing to an exported graph and have exported badly in older torch releases.
- LayerNorm (eps 1e-6) is one ``LayerNormalization`` node from opset 17 (P-LN); GELU is the exact
  erf form (P-GELU).
- The position embedding fixes the token count, so the graph bakes the resolution in. Another
  ``--img-size`` resamples the embedding *once, on the weights* (bicubic with antialiasing, as timm's
  ``resample_abs_pos_embed``), through :meth:`VisionTransformer.set_input_size`; no resize op reaches
  the graph (P-INTERP). Any multiple of the patch size works.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bbruntime.errors import InputSizeError

from ._layers import Mlp, to_2tuple
from ._registry import IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, register_model


def patch_grid(img_size: int | tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Tokens per side at ``img_size``; a side that is not a multiple of the patch size is an error."""
    h, w = to_2tuple(img_size)
    if h % patch_size or w % patch_size or min(h, w) < patch_size:
        raise InputSizeError(f"a ViT with {patch_size}x{patch_size} patches needs image sides that are multiples "
                             f"of {patch_size}; got {h}x{w}")
    return h // patch_size, w // patch_size


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: one conv with kernel = stride = patch size."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # B, N, C


class Attention(nn.Module):
    """Multi-head self-attention over all tokens, one fused qkv projection (timm's layout)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, dim = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(-1, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 img_size: int | tuple[int, int] = 224, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.grid_size = patch_grid(img_size, patch_size)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's scheme for the embeddings. The Linear layers keep PyTorch's default init (std
        # 1/sqrt(3 fan_in), 0.021 at width 768, close to timm's 0.02): drawing ViT-H's 632M weights a
        # second time would double its build time for no difference a random-weight export can see.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    @torch.no_grad()
    def set_input_size(self, img_size: int | tuple[int, int]) -> None:
        """Re-target the model to ``img_size`` by resampling the position embedding of the patch
        tokens (bicubic, antialiased: timm's ``resample_abs_pos_embed``); the class token's entry
        is kept. Done once, in eager mode, so the exported graph carries the resampled constant."""
        new_grid = patch_grid(img_size, self.patch_size)
        if new_grid == self.grid_size:
            return
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        grid = patch_pos.float().reshape(1, *self.grid_size, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True, align_corners=False)
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(cls_pos.dtype)
        self.pos_embed = nn.Parameter(torch.cat([cls_pos, patch_pos], dim=1),
                                      requires_grad=self.pos_embed.requires_grad)
        self.grid_size = new_grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x)[:, 0])


_TORCHVISION_RENAMES = (  # torchvision key pattern -> timm key
    (r"^conv_proj\.", "patch_embed.proj."),
    (r"^class_token$", "cls_token"),
    (r"^encoder\.pos_embedding$", "pos_embed"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.ln_2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.self_attention\.out_proj\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layers\.encoder_layer_(\d+)\.mlp\.3\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.ln\.", "norm."),
    (r"^heads\.head\.", "head."),
)


def remap_torchvision_vit(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ``VisionTransformer`` keys -> ours. Its ``in_proj`` packs q, k, v in the same
    order as timm's ``qkv``, so every tensor is only renamed; keys already in our layout pass through."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in _TORCHVISION_RENAMES:
            key, hits = re.subn(pattern, replacement, key)
            if hits:
                break
        out[key] = value
    return out


@dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int


_CONFIGS = {
    "vit_tiny_patch16_224": ViTConfig(16, 192, 12, 3),
    "vit_small_patch16_224": ViTConfig(16, 384, 12, 6),
    "vit_base_patch16_224": ViTConfig(16, 768, 12, 12),
    "vit_large_patch16_224": ViTConfig(16, 1024, 24, 16),
    "vit_huge_patch14_224": ViTConfig(14, 1280, 32, 16),
}


def _create_vit(name: str, **overrides) -> VisionTransformer:
    cfg = _CONFIGS[name]
    return VisionTransformer(cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads, **overrides)


_PAPER = "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale, ICLR 2021"
# timm's AugReg weights (Steiner et al., 2021): Inception mean/std, bicubic, crop 0.9.
_TIMM_EVAL = dict(mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic", crop_pct=0.9)
_PATCH16 = dict(family="vit", paper=_PAPER, size_divisor=16, min_size=16, **_TIMM_EVAL)


@register_model(reference="timm:vit_tiny_patch16_224", reference_params=5_717_416, **_PATCH16)
def vit_tiny_patch16_224(**overrides) -> VisionTransformer:
    return _create_vit("vit_tiny_patch16_224", **overrides)


@register_model(reference="timm:vit_small_patch16_224", reference_params=22_050_664, **_PATCH16)
def vit_small_patch16_224(**overrides) -> VisionTransformer:
    return _create_vit("vit_small_patch16_224", **overrides)


@register_model(reference="timm:vit_base_patch16_224", reference_params=86_567_656, aliases=("vit_b_16",),
                remap=remap_torchvision_vit, **_PATCH16)
def vit_base_patch16_224(**overrides) -> VisionTransformer:
    return _create_vit("vit_base_patch16_224", **overrides)


@register_model(reference="timm:vit_large_patch16_224", reference_params=304_326_632, aliases=("vit_l_16",),
                remap=remap_torchvision_vit, **_PATCH16)
def vit_large_patch16_224(**overrides) -> VisionTransformer:
    return _create_vit("vit_large_patch16_224", **overrides)


# timm has no ImageNet-1k weights for ViT-H/14; the deployable ones are torchvision's SWAG-linear
# (ImageNet mean/std, bicubic resize straight to 224, no crop margin).
@register_model(family="vit", paper=_PAPER, reference="timm:vit_huge_patch14_224", reference_params=632_045_800,
                aliases=("vit_h_14",), remap=remap_torchvision_vit, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                interpolation="bicubic", crop_pct=1.0, size_divisor=14, min_size=14)
def vit_huge_patch14_224(**overrides) -> VisionTransformer:
    return _create_vit("vit_huge_patch14_224", **overrides)
