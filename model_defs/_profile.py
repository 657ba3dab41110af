"""Parameter and multiply-accumulate counts, computed on the meta device (no memory, no math).

MACs count Conv and Linear layers at batch 1, the convention of ../shared/families.md ("cnt");
attention matmuls, norms and elementwise ops are left out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ._registry import create_model, get_spec


@dataclass(frozen=True)
class ModelStats:
    params: int
    gmacs: float
    img_size: tuple[int, int]


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Conv + Linear multiply-accumulates of one forward pass at batch 1."""
    total = 0

    def on_conv(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        per_output = module.in_channels // module.groups
        for k in module.kernel_size:
            per_output *= k
        total += output.numel() * per_output

    def on_linear(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(on_linear))
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return total


@functools.cache
def model_stats(name: str, input_size: tuple[int, int, int] | None = None) -> ModelStats:
    """Parameters and GMACs of a registered variant, at its default size unless given."""
    size = input_size or get_spec(name).input_size
    with torch.device("meta"):
        model = create_model(name)
    params = sum(p.numel() for p in model.parameters())
    return ModelStats(params=params, gmacs=count_macs(model, size) / 1e9, img_size=size[1:])
