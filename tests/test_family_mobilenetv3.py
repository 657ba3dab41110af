"""MobileNetV3 beyond the registry suite: torchvision's checkpoints load through the remap and give
torchvision's outputs (its BatchNorm eps of 1e-3 is folded into the running variance)."""

from __future__ import annotations

import pytest
import torch

from model_defs import create_model, get_entry

from .conftest import randomize_norm_stats, reference_model


@pytest.mark.parametrize(("name", "tv_name"), [("mobilenetv3_large_100", "mobilenet_v3_large"),
                                               ("mobilenetv3_small_100", "mobilenet_v3_small")])
def test_torchvision_checkpoint_remaps(name: str, tv_name: str) -> None:
    torch.manual_seed(0)
    reference = reference_model(f"torchvision:{tv_name}", 1000)
    randomize_norm_stats(reference)
    ours = create_model(name)
    ours.load_state_dict(get_entry(name).remap(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert (got - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
