"""MnasNet-B1: torchvision checkpoints (``layers.*`` layout) load through the family remap."""

from __future__ import annotations

import torch

from model_defs import create_model, get_entry

from .conftest import assert_same_outputs, randomize_norm_stats, reference_model


def test_torchvision_mnasnet1_0_remap() -> None:
    torch.manual_seed(0)
    reference = reference_model("torchvision:mnasnet1_0", 1000)
    randomize_norm_stats(reference)
    ours = create_model("mnasnet_100")
    ours.load_state_dict(get_entry("mnasnet_100").remap(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert_same_outputs(reference, ours, x)
