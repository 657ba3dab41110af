"""Swin Transformer.

Paper: "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows" (Liu et al., ICCV 2021).

A 4x4 patch embedding, then four stages of transformer blocks whose self-attention stays inside
non-overlapping ``window x window`` tiles; every second block shifts the tiling by half a window
(a cyclic ``torch.roll``) so information crosses tile borders, and an attention mask keeps tokens
that the roll wrapped around from attending to each other. Patch merging (2x2 neighbours
concatenated, LayerNorm, Linear) halves the resolution between stages. Module names are timm's
(``layers.1.downsample``, ``layers.1.blocks.0.attn.qkv``, ``head.fc``); torchvision's ``swin_t/s/b``
checkpoints load through :func:`remap_torchvision_swin`.

Input sizes: sides must be multiples of 32 (the total stride, so every patch merging sees an even
grid) and at least 224 = 32 x window, so the last stage is never smaller than one window and the
relative-position table keeps its trained shape. Sizes in between window multiples (256, 288, ...)
are handled like timm: a stage whose side is not a multiple of the window is zero-padded at the
bottom/right after the shift and cropped back after attention; a stage no larger than one window
is not shifted. The padding amounts are constants of the resolution, so the graph stays static.
The spec says this as ``size_divisor=32, min_size=224``, so ``--img-size 240`` or ``192`` is
rejected with a message naming the rule.

Export notes: ``torch.roll`` becomes Slice+Concat (P-ROLL); window partitioning is a 6-D
Reshape/Transpose; the relative-position index and the shifted-window attention mask are buffers
computed for the model's resolution (P-RELIDX), so the graph bakes the resolution in and another
size goes through :meth:`SwinTransformer.set_input_size` before export. Attention is MatMul ->
Softmax -> MatMul; LayerNorm is one node from opset 17 (P-LN), GELU the exact erf form (P-GELU).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bbruntime.errors import InputSizeError

from ._layers import ClassifierHead, Mlp, to_2tuple
from ._registry import register_model

# Masked logits get this added before the softmax: the original implementation's value, which
# softmax turns into an exact zero in float32 while staying finite in float16.
_MASKED = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window * window, C), windows in row-major order."""
    _, h, w, c = x.shape
    x = x.reshape(-1, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition` for an ``h x w`` grid."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into the (2w-1)^2 bias table for every pair of tokens in a window, N = w^2."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    delta = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # 2, N, N, each in [0, 2w-2]
    return delta[0] * (2 * window - 1) + delta[1]


def shifted_window_mask(padded_hw: tuple[int, int], window: int, shift: tuple[int, int]) -> torch.Tensor:
    """(windows, N, N) additive mask for attention after a cyclic shift by ``shift``.

    After the roll, the last ``window`` rows (columns) of the grid hold a window whose top part came
    from the interior and whose bottom ``shift`` rows wrapped around from the top edge. Each position
    gets a region label (3 x 3 regions); tokens of different regions must not attend to each other.
    """
    labels = []
    for length, offset in zip(padded_hw, shift, strict=True):
        region = torch.zeros(length, dtype=torch.long)
        if offset:
            region[length - window:] = 1
            region[length - offset:] = 2
        labels.append(region)
    grid = labels[0][:, None] * 3 + labels[1][None, :]
    windows = window_partition(grid[None, :, :, None], window).squeeze(-1)  # windows, N
    differs = windows[:, :, None] != windows[:, None, :]
    return differs.float() * _MASKED


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned bias per relative offset."""

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.window_area = window * window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _relative_position_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        return bias.reshape(self.window_area, self.window_area, -1).permute(2, 0, 1).unsqueeze(0)  # 1, heads, N, N

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens, dim = self.window_area, x.shape[-1]
        qkv = self.qkv(x).reshape(-1, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self._relative_position_bias()
        if mask is not None:  # (windows, N, N), broadcast over the batch and the heads
            windows = mask.shape[0]
            attn = attn.reshape(-1, windows, self.num_heads, tokens, tokens) + mask[None, :, None]
            attn = attn.reshape(-1, self.num_heads, tokens, tokens)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, tokens, dim)
        return self.proj(x)


class SwinTransformerBlock(nn.Module):
    """Pre-norm block on a (B, H, W, C) map: (shifted) window attention, then an MLP."""

    def __init__(self, dim: int, num_heads: int, window: int, shifted: bool, resolution: tuple[int, int],
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.window = window
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.set_input_resolution(resolution)

    def set_input_resolution(self, resolution: tuple[int, int]) -> None:
        """Fix the shift, padding and attention mask for an ``H x W`` input map."""
        self.resolution = resolution
        # A side no larger than one window is a single window: shifting it would only wrap tokens.
        self.shift = tuple(self.window // 2 if self.shifted and side > self.window else 0 for side in resolution)
        self.padded = tuple(-(-side // self.window) * self.window for side in resolution)
        mask = shifted_window_mask(self.padded, self.window, self.shift) if any(self.shift) else None
        if mask is not None:
            mask = mask.to(self.norm1.weight.device)
        self.register_buffer("attn_mask", mask, persistent=False)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        (h, w), (hp, wp) = self.resolution, self.padded
        if any(self.shift):
            x = torch.roll(x, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
        windows = self.attn(window_partition(x, self.window), self.attn_mask)
        x = window_reverse(windows, self.window, hp, wp)
        if (hp, wp) != (h, w):
            x = x[:, :h, :w, :]
        if any(self.shift):
            x = torch.roll(x, shifts=self.shift, dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbours -> one token: concatenate (4C), LayerNorm, Linear to 2C. The concatenation
    order (row offset fastest, then column offset) is the original implementation's."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w, c = x.shape
        x = x.reshape(-1, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinTransformerStage(nn.Module):
    """Optional patch merging (every stage but the first), then blocks alternating plain and shifted."""

    def __init__(self, in_dim: int, dim: int, depth: int, num_heads: int, window: int, resolution: tuple[int, int]):
        super().__init__()
        self.downsample = PatchMerging(in_dim) if in_dim != dim else nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(dim, num_heads, window, shifted=i % 2 == 1, resolution=resolution)
            for i in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    """4x4 patches -> a (B, H/4, W/4, C) token map, then LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    def __init__(self, embed_dim: int, depths: tuple[int, ...], num_heads: tuple[int, ...], window: int = 7,
                 patch_size: int = 4, img_size: int | tuple[int, int] = 224, num_classes: int = 1000,
                 in_chans: int = 3):
        super().__init__()
        self.window = window
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        resolutions = self._stage_resolutions(img_size, len(depths))
        dims = [embed_dim * 2 ** i for i in range(len(depths))]
        self.layers = nn.Sequential(*[
            SwinTransformerStage(dims[max(i - 1, 0)], dims[i], depth, heads, window, resolutions[i])
            for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True))])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = ClassifierHead(dims[-1], num_classes)
        # The Linear layers keep PyTorch's default init (std ~ 1/sqrt(3 fan_in), near timm's 0.02).
        for m in self.modules():
            if isinstance(m, WindowAttention):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def _stage_resolutions(self, img_size: int | tuple[int, int], stages: int) -> list[tuple[int, int]]:
        h, w = to_2tuple(img_size)
        stride = self.patch_size * 2 ** (stages - 1)
        smallest = stride * self.window
        if h % stride or w % stride or min(h, w) < smallest:
            raise InputSizeError(f"Swin with window {self.window} takes image sides that are multiples of {stride} "
                                 f"and at least {smallest} ({smallest}, {smallest + stride}, ...); got {h}x{w}")
        return [(h // (self.patch_size * 2 ** i), w // (self.patch_size * 2 ** i)) for i in range(stages)]

    def set_input_size(self, img_size: int | tuple[int, int]) -> None:
        """Re-target the model to ``img_size``: recompute every block's shift, padding and mask.
        No weight changes: the window, and so the relative-position table, stays as trained."""
        resolutions = self._stage_resolutions(img_size, len(self.layers))
        for stage, resolution in zip(self.layers, resolutions, strict=True):
            for block in stage.blocks:
                block.set_input_resolution(resolution)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layers(self.patch_embed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).permute(0, 3, 1, 2))  # the shared head pools NCHW


def remap_torchvision_swin(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's ``SwinTransformer`` keys -> ours. torchvision numbers stages and patch merging
    together in ``features`` (0: embedding, odd: stages, even > 0: merging before the next stage);
    its merging concatenates the 2x2 neighbours in the same order, so tensors are only renamed. Its
    persistent ``relative_position_index`` buffers are dropped: ours are recomputed."""
    out = {}
    for key, value in state.items():
        if key.endswith("relative_position_index"):
            continue
        if match := re.match(r"features\.0\.([02])\.(.+)", key):
            key = f"patch_embed.{'proj' if match[1] == '0' else 'norm'}.{match[2]}"
        elif match := re.match(r"features\.(\d+)\.(.+)", key):
            index, rest = int(match[1]), match[2]
            if index % 2:
                rest = rest.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")
                key = f"layers.{index // 2}.blocks.{rest}"
            else:
                key = f"layers.{index // 2}.downsample.{rest}"
        elif key.startswith("head."):
            key = "head.fc." + key[len("head."):]
        out[key] = value
    return out


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]


_CONFIGS = {
    "swin_tiny_patch4_window7_224": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "swin_small_patch4_window7_224": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "swin_base_patch4_window7_224": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32)),
}


def _create_swin(name: str, **overrides) -> SwinTransformer:
    cfg = _CONFIGS[name]
    return SwinTransformer(cfg.embed_dim, cfg.depths, cfg.num_heads, **overrides)


_PAPER = "Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV 2021"
# timm's (and the authors') eval transform: ImageNet mean/std, bicubic, crop 0.9.
_SWIN = dict(family="swin", paper=_PAPER, interpolation="bicubic", crop_pct=0.9, size_divisor=32, min_size=224,
             remap=remap_torchvision_swin)


@register_model(reference="timm:swin_tiny_patch4_window7_224", reference_params=28_288_354, aliases=("swin_t",),
                **_SWIN)
def swin_tiny_patch4_window7_224(**overrides) -> SwinTransformer:
    return _create_swin("swin_tiny_patch4_window7_224", **overrides)


@register_model(reference="timm:swin_small_patch4_window7_224", reference_params=49_606_258, aliases=("swin_s",),
                **_SWIN)
def swin_small_patch4_window7_224(**overrides) -> SwinTransformer:
    return _create_swin("swin_small_patch4_window7_224", **overrides)


@register_model(reference="timm:swin_base_patch4_window7_224", reference_params=87_768_224, aliases=("swin_b",),
                **_SWIN)
def swin_base_patch4_window7_224(**overrides) -> SwinTransformer:
    return _create_swin("swin_base_patch4_window7_224", **overrides)
