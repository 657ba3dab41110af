"""MobileNetV2: torchvision checkpoints (``features.*`` layout) load through the family remap."""

from __future__ import annotations

from .conftest import assert_checkpoint_parity


def test_torchvision_mobilenet_v2_remap() -> None:
    assert_checkpoint_parity("torchvision:mobilenet_v2", "mobilenetv2_100", remap=True)
