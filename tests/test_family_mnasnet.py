"""MnasNet-B1: torchvision checkpoints (``layers.*`` layout) load through the family remap."""

from __future__ import annotations

from .conftest import assert_checkpoint_parity


def test_torchvision_mnasnet1_0_remap() -> None:
    assert_checkpoint_parity("torchvision:mnasnet1_0", "mnasnet_100", remap=True)
