"""MnasNet-B1: torchvision checkpoints (``layers.*`` layout) load through the family remap."""

from __future__ import annotations

import torch

from model_defs import create_model, get_entry

from .conftest import randomize_norm_stats, reference_model
from .test_families import PARITY_TOLERANCE


def test_torchvision_mnasnet1_0_remap() -> None:
    torch.manual_seed(0)
    reference = reference_model("torchvision:mnasnet1_0", 1000)
    randomize_norm_stats(reference)
    ours = create_model("mnasnet_100")
    ours.load_state_dict(get_entry("mnasnet_100").remap(reference.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert (got - expected).abs().max().item() <= PARITY_TOLERANCE * max(1.0, expected.abs().max().item())
